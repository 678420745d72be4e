"""Staff management: the admin page and the `crm users` commands."""

from crm.extensions import db
from crm.models import AuditLog, StaffUser
from tests import factories


def test_admin_adds_changes_and_deactivates_staff(app, client_as):
    """The admin page creates an account, changes its role, then deactivates it."""
    admin = client_as("admin")
    response = admin.post("/settings/staff/", data={
        "email": "New.Person@Example.org", "name": "New Person", "role": "analyst",
        "password": "a-long-password"})
    assert response.status_code == 302
    user = db.session.scalar(db.select(StaffUser).filter_by(email="new.person@example.org"))
    assert user.role == "analyst"

    admin.post(f"/settings/staff/{user.id}", data={"name": "New Person", "role": "organizer", "active": "y"})
    db.session.refresh(user)
    assert user.role == "organizer" and user.active

    admin.post(f"/settings/staff/{user.id}", data={"name": "New Person", "role": "organizer"})
    db.session.refresh(user)
    assert not user.active
    actions = db.session.scalars(db.select(AuditLog.action).order_by(AuditLog.id)).all()
    assert actions == ["staff.create", "staff.update", "staff.update"]


def test_form_errors_appear_beside_the_field(app, client_as):
    """A bad address and a short password are reported on the form, not as a crash."""
    admin = client_as("admin")
    response = admin.post("/settings/staff/", data={"email": "not-an-email", "role": "analyst",
                                                     "password": "short"})
    assert response.status_code == 400
    assert b'id="password-err"' in response.data


def test_duplicate_email_is_refused_case_insensitively(app, client_as):
    """Staff emails are unique whatever their case."""
    admin = client_as("admin")
    response = admin.post("/settings/staff/", data={"email": admin.user.email.upper(), "role": "analyst",
                                                    "password": "a-long-password"})
    assert response.status_code == 400
    assert b"already exists" in response.data


def test_last_admin_cannot_be_demoted(app, client_as):
    """There is always at least one active admin."""
    admin = client_as("admin")
    response = admin.post(f"/settings/staff/{admin.user.id}", data={"role": "analyst", "active": "y"})
    assert response.status_code == 400
    assert b"At least one active admin" in response.data
    db.session.refresh(admin.user)
    assert admin.user.role == "admin"


def test_cli_create_list_deactivate(app, runner):
    """`crm users create/list/deactivate` manage accounts from a terminal."""
    result = runner.invoke(args=["users", "create", "Cli@Example.org", "--role", "admin",
                                 "--password", "a-long-password"])
    assert result.exit_code == 0, result.output
    factories.make_staff("admin")  # so deactivating the CLI admin leaves another admin
    listing = runner.invoke(args=["users", "list"]).output
    assert "cli@example.org" in listing and "admin" in listing
    result = runner.invoke(args=["users", "deactivate", "cli@example.org"])
    assert result.exit_code == 0
    assert "deactivated" in runner.invoke(args=["users", "list"]).output


def test_cli_prompts_for_a_password(app, runner):
    """Without --password the command asks twice, hidden."""
    result = runner.invoke(args=["users", "create", "ask@example.org", "--role", "analyst"],
                           input="a-long-password\na-long-password\n")
    assert result.exit_code == 0, result.output
    user = db.session.scalar(db.select(StaffUser).filter_by(email="ask@example.org"))
    assert user.check_password("a-long-password")


def test_cli_reports_bad_input(app, runner):
    """A short password or bad address is a clear error and creates nothing."""
    result = runner.invoke(args=["users", "create", "x@example.org", "--password", "short"])
    assert result.exit_code != 0 and "at least 10" in result.output
    result = runner.invoke(args=["users", "create", "nope", "--password", "a-long-password"])
    assert result.exit_code != 0
    assert db.session.scalar(db.select(db.func.count()).select_from(StaffUser)) == 0
