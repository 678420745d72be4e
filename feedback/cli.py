"""`crm bounces fetch` and `crm suppression list|add|import|remove`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click
from flask.cli import AppGroup

bounces_cli = AppGroup("bounces", help="Read the bounce mailbox.")
suppression_cli = AppGroup("suppression", help="The suppression list.")


@bounces_cli.command("fetch")
def fetch_command() -> None:
    """Read BOUNCE_MAILBOX_URL once: apply every DSN and complaint report, move or delete them."""
    from feedback.mailbox import MailboxError, fetch

    try:
        result = fetch()
    except MailboxError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(", ".join(f"{k} {v}" for k, v in asdict(result).items() if k != "errors"))


@suppression_cli.command("list")
@click.option("--reason", type=click.Choice(["bounced", "complained", "erased", "staff"]))
@click.option("-q", "query", default="", help="Part of an address, or a whole address.")
def list_command(reason: str | None, query: str) -> None:
    """The newest 50 entries: address (or hash), reason, since."""
    from crm.supporters import suppression

    for entry in suppression.listing(query, reason or ""):
        click.echo(f"{entry.email or 'sha256:' + entry.email_hash}\t{entry.reason}\t{entry.created_at:%Y-%m-%d}")


def _staff_id(email: str) -> int:
    from crm.extensions import db
    from crm.models import StaffUser

    staff_id = db.session.scalar(db.select(StaffUser.id).where(StaffUser.email == email.strip().lower()))
    if staff_id is None:
        raise click.ClickException(f"no staff account {email}")
    return staff_id


@suppression_cli.command("add")
@click.argument("address")
@click.option("--by", "by", required=True, help="Your staff account's email (for the audit log).")
@click.option("--note", default="")
def add_command(address: str, by: str, note: str) -> None:
    """Add one address."""
    from crm.supporters import suppression

    try:
        suppression.add_by_staff(address, _staff_id(by), note)
    except suppression.SuppressionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("added")


@suppression_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", "by", required=True, help="Your staff account's email (for the audit log).")
@click.option("--note", default="")
def import_command(path: Path, by: str, note: str) -> None:
    """Add every address in a CSV (a column headed email, else the first)."""
    from crm.supporters import suppression
    from feedback.pages import read_addresses

    result = suppression.add_many_by_staff(read_addresses(path.read_bytes()), _staff_id(by), note,
                                           source=f"import:{path.name}")
    click.echo(f"added {result.added}, already listed {result.already}, not addresses {len(result.invalid)}")
    for line, value, why in result.invalid[:20]:
        click.echo(f"  line {line}: {value!r}: {why}", err=True)


@suppression_cli.command("remove")
@click.argument("address")
@click.option("--by", "by", required=True, help="Your staff account's email (for the audit log).")
@click.option("--reason", required=True)
def remove_command(address: str, by: str, reason: str) -> None:
    """Remove one address (never a complaint), with a reason."""
    from crm.emails import InvalidEmail, normalise_email
    from crm.supporters import suppression

    try:
        entry = suppression.entry_for(normalise_email(address))
    except InvalidEmail as exc:
        raise click.ClickException(str(exc)) from None
    if entry is None:
        raise click.ClickException("not on the suppression list")
    try:
        suppression.remove_by_staff(entry.id, _staff_id(by), reason)
    except suppression.SuppressionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("removed")
