"""Rules for staff accounts, shared by the admin pages and the CLI."""

from __future__ import annotations

from crm import audit
from crm.emails import InvalidEmail, normalise_email
from crm.extensions import db
from crm.models import ROLES, StaffUser

MIN_PASSWORD_LENGTH = 10


class StaffError(ValueError):
    """A staff change that the rules refuse; the message is shown to the user."""


def find_staff(email: str) -> StaffUser | None:
    try:
        address = normalise_email(email)
    except InvalidEmail:
        return None
    return db.session.scalar(db.select(StaffUser).filter_by(email=address))


def check_password_strength(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise StaffError(f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.")


def new_staff_problems(email: str, role: str, password: str) -> dict[str, str]:
    """Every reason a new account would be refused, by field (nothing is written)."""
    errors: dict[str, str] = {}
    try:
        address = normalise_email(email or "")
    except InvalidEmail as exc:
        errors["email"] = str(exc)
    else:
        if find_staff(address) is not None:
            errors["email"] = f"A staff account for {address} already exists."
    if role not in ROLES:
        errors["role"] = f"Role must be one of {', '.join(ROLES)}."
    try:
        check_password_strength(password)
    except StaffError as exc:
        errors["password"] = str(exc)
    return errors


def create_staff(email: str, role: str, password: str, name: str = "") -> StaffUser:
    """Create an active staff account, or raise StaffError saying why not (every reason)."""
    errors = new_staff_problems(email, role, password)
    if errors:
        raise StaffError(" ".join(errors.values()))
    address = normalise_email(email)
    user = StaffUser(email=address, name=name.strip(), role=role, active=True)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record("staff.create", address, role=role)
    db.session.commit()
    return user


def _active_admins_besides(user: StaffUser) -> int:
    return db.session.scalar(
        db.select(db.func.count(StaffUser.id)).where(
            StaffUser.role == "admin", StaffUser.active.is_(True), StaffUser.id != user.id
        )
    )


def update_staff(user: StaffUser, *, role: str, name: str, active: bool) -> StaffUser:
    """Change role, name or active flag; the last active admin cannot lose admin rights."""
    if role not in ROLES:
        raise StaffError(f"Role must be one of {', '.join(ROLES)}.")
    loses_admin = user.role == "admin" and user.active and (role != "admin" or not active)
    if loses_admin and _active_admins_besides(user) == 0:
        raise StaffError("At least one active admin must remain.")
    changes = {
        key: [old, new]
        for key, old, new in (("role", user.role, role), ("name", user.name, name.strip()),
                              ("active", user.active, active))
        if old != new
    }
    user.role, user.name, user.active = role, name.strip(), active
    if changes:
        audit.record("staff.update", user.email, changes=changes)
    db.session.commit()
    return user


def deactivate_staff(email: str) -> StaffUser:
    user = find_staff(email)
    if user is None:
        raise StaffError(f"No staff account for {email}.")
    return update_staff(user, role=user.role, name=user.name, active=False)


def set_password(user: StaffUser, password: str) -> None:
    check_password_strength(password)
    user.set_password(password)
    audit.record("staff.password", user.email)
    db.session.commit()
