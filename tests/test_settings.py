"""Organisation settings in the database (over the environment's defaults), and the CLI beside `crm dev`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from campaigns import service as campaign_service
from crm.config import DEV_SETTINGS_FILE, load_config
from crm.extensions import db
from crm.models import AuditLog, OrgSettings, SenderIdentity
from crm.settings import org
from tests import factories

ROOT = Path(__file__).resolve().parents[1]
FORM = {"name": "Shelter Now", "postal_address": "12 Hope Street\nManchester M1 1AA",
        "mail_from": "News@Shelter.example", "country": "GB"}


def test_environment_is_the_default_until_an_admin_saves(app, client_as):
    """Before any save the environment's values apply; after it, the stored ones, at once and audit-logged."""
    assert org.current() == org.Org("Test Org", "1 Test Street, London N1 1AA", "updates@news.example.org", "")
    admin = client_as("admin")
    response = admin.post("/settings/org", data=FORM)
    assert response.status_code == 302 and response.headers["Location"].endswith("/settings/#organisation")
    assert org.current() == org.Org("Shelter Now", "12 Hope Street\nManchester M1 1AA", "news@shelter.example", "GB")
    assert db.session.get(OrgSettings, 1).updated_by_id == admin.user.id
    entry = db.session.scalar(db.select(AuditLog).filter_by(action="settings.org_save"))
    assert entry.staff_user_id == admin.user.id
    assert entry.details["fields"] == ["country", "mail_from", "name", "postal_address"]
    assert entry.details["changes"]["name"] == ["Test Org", "Shelter Now"]
    page = admin.get("/settings/").text
    assert "Shelter Now" in page and "12 Hope Street" in page  # the nav's brand and the form
    # The default sender is offered to campaigns as a sender identity named after the organisation.
    sender = db.session.scalar(db.select(SenderIdentity).filter_by(email="news@shelter.example"))
    assert (sender.name, sender.is_active) == ("Shelter Now", True)


def test_every_problem_is_reported_in_one_submit(app, client_as):
    """Empty name, empty address, a bad sender and an unknown country: all four at once, nothing stored."""
    response = client_as("admin").post("/settings/org", data={"name": " ", "postal_address": "",
                                                              "mail_from": "not an address", "country": "XX"})
    assert response.status_code == 400
    page = response.text
    for message in ("name is required", "A postal address is required", "Choose a country from the list"):
        assert message in page
    assert page.count('class="error"') == 4
    assert db.session.get(OrgSettings, 1) is None


def test_only_admins_change_settings(app, client_as):
    """Organizers and analysts get 403 on the settings form."""
    for role in ("organizer", "analyst"):
        assert client_as(role).post("/settings/org", data=FORM).status_code == 403
    assert db.session.get(OrgSettings, 1) is None


def test_demo_placeholder_address_is_a_banner_until_replaced(make_app, client_as):
    """`make run`'s placeholder address shows a warning on every staff page, linking admins to Settings."""
    app = make_app(ORG_POSTAL_ADDRESS=org.DEMO_POSTAL_ADDRESS)
    with app.app_context():
        admin = factories.signed_in_client(app, "admin")
        organizer = factories.signed_in_client(app, "organizer")
        page = admin.get("/supporters/").text
        assert "still the demo placeholder" in page and 'href="/settings/#organisation"' in page
        assert "An admin can set it under Settings" in organizer.get("/").text
        refused = admin.post("/settings/org", data={**FORM, "postal_address": org.DEMO_POSTAL_ADDRESS})
        assert refused.status_code == 400 and "Replace the demo address" in refused.text
        admin.post("/settings/org", data=FORM)
        assert "demo placeholder" not in admin.get("/supporters/").text


def test_no_address_sends_staff_to_settings_not_to_the_editor(make_app):
    """The send confirmation for an organisation without an address links to Settings (admins) and says why."""
    app = make_app(ORG_POSTAL_ADDRESS="")
    with app.app_context():
        campaign = factories.make_campaign()
        admin = factories.signed_in_client(app, "admin")
        page = admin.get(f"/campaigns/{campaign.id}/send").text
        assert "postal address is not set" in page
        assert 'id="fix-link" href="/settings/#organisation"' in page and "Edit the campaign" not in page
        assert "no postal address yet" in page  # the banner too
        organizer = factories.signed_in_client(app, "organizer")
        page = organizer.get(f"/campaigns/{campaign.id}/send").text
        assert "An admin can set it under Settings" in page and 'id="fix-link"' not in page


def test_messages_carry_the_stored_address(make_app):
    """The composed footer (preview and every message) prints the address saved in Settings."""
    app = make_app()
    with app.app_context():
        campaign = factories.make_campaign()
        org.save(FORM)
        rendered, problems, _ = campaign_service.render_preview(campaign)
        assert not problems
        assert "Shelter Now · 12 Hope Street\nManchester M1 1AA" in rendered.html
        assert "1 Test Street" not in rendered.html and "1 Test Street" not in rendered.text


def test_address_saved_in_settings_lets_a_campaign_send(make_app):
    """With ORG_POSTAL_ADDRESS unset in the environment, an address saved in Settings is enough to send."""
    from campaigns.pipeline import readiness_problem

    app = make_app(ORG_POSTAL_ADDRESS="")
    with app.app_context():
        campaign = factories.make_campaign(segment=None)
        org.save(FORM)
        assert "postal" not in readiness_problem(campaign).lower()


def test_cached_for_other_processes_but_fresh_after_a_save_here(app):
    """current() is read once per CACHE_SECONDS; a save in this process is seen at once."""
    first = org.current()
    db.session.add(OrgSettings(id=1, name="Changed elsewhere"))
    db.session.commit()
    assert org.current() is first  # another process's save shows within CACHE_SECONDS
    org.forget()
    assert org.current().name == "Changed elsewhere"
    assert org.current().postal_address == "1 Test Street, London N1 1AA"  # NULL columns keep the default


def test_org_cli_shows_and_sets(app, runner):
    """`crm org set` changes only what it is given, with the same checks; `crm org show` prints the result."""
    result = runner.invoke(args=["org", "set", "--postal-address", "5 Quay Road, Bristol BS1 4DJ", "--country", "gb"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(args=["org", "show"]).output
    assert "postal address: 5 Quay Road, Bristol BS1 4DJ" in shown and "name:           Test Org" in shown
    assert "country:        GB" in shown
    bad = runner.invoke(args=["org", "set", "--mail-from", "nobody"])
    assert bad.exit_code != 0 and "mail_from" in bad.output
    assert db.session.scalar(db.select(AuditLog.action).filter_by(action="settings.org_save")) == "settings.org_save"


# -- the command line beside `crm dev` ------------------------------------------------------

def test_dev_settings_make_other_commands_use_development(tmp_path, monkeypatch):
    """A folder `crm dev` ran in gives other commands its settings; CRM_ENV and variables still win."""
    monkeypatch.delenv("CRM_ENV", raising=False)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    (tmp_path / DEV_SETTINGS_FILE).write_text(json.dumps({
        "CRM_ENV": "development", "ORG_POSTAL_ADDRESS": org.DEMO_POSTAL_ADDRESS, "ORG_COUNTRY": "GB",
        "REDIS_URL": f"unix://{tmp_path / 'gone.sock'}", "SMTP_URL": "smtp://127.0.0.1:8025"}))
    config = load_config(str(tmp_path))
    assert config["CRM_ENV"] == "development" and config["SECRET_KEY"]
    assert (config["ORG_POSTAL_ADDRESS"], config["ORG_COUNTRY"]) == (org.DEMO_POSTAL_ADDRESS, "GB")
    assert "REDIS_URL" not in config and "SMTP_URL" not in config  # that run has stopped: its socket is gone
    (tmp_path / "live.sock").touch()
    (tmp_path / DEV_SETTINGS_FILE).write_text(json.dumps({"CRM_ENV": "development",
                                                          "REDIS_URL": f"unix://{tmp_path / 'live.sock'}"}))
    assert load_config(str(tmp_path))["REDIS_URL"] == f"unix://{tmp_path / 'live.sock'}"
    monkeypatch.setenv("CRM_ENV", "production")
    with pytest.raises(Exception, match="SECRET_KEY"):
        load_config(str(tmp_path))


def test_users_create_beside_make_run_needs_no_variables(tmp_path):
    """`crm users create` in the instance folder `crm dev` set up works with no CRM_ENV or SECRET_KEY."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / DEV_SETTINGS_FILE).write_text(json.dumps({"CRM_ENV": "development"}))
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {**keep, "CRM_INSTANCE_PATH": str(instance)}
    crm = [sys.executable, "-m", "crm.cli"]
    upgraded = subprocess.run([*crm, "db", "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    created = subprocess.run([*crm, "users", "create", "new@example.org", "--role", "admin", "--password",
                              "a-long-password-1"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert "Created admin new@example.org" in created.stdout
    without = subprocess.run([*crm, "users", "list"], env={**keep, "CRM_INSTANCE_PATH": str(tmp_path / "other")},
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert without.returncode == 2 and "SECRET_KEY: is required outside development" in without.stderr
