"""The `crm` command: Flask's own commands (db, run, routes, shell) plus ours."""

from __future__ import annotations

import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup

from crm.config import ConfigError

users = AppGroup("users", help="Manage staff accounts.")


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "organizer", "analyst"]), default="organizer",
              show_default=True)
@click.option("--name", default="", help="Display name.")
@click.option("--password", help="Initial password (prompted for when omitted).")
def users_create(email: str, role: str, name: str, password: str | None) -> None:
    """Create a staff account."""
    from crm.staff.service import StaffError, create_staff

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_staff(email, role, password, name)
    except StaffError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created {user.role} {user.email}")


@users.command("list")
def users_list() -> None:
    """List staff accounts."""
    from crm.extensions import db
    from crm.models import StaffUser

    for user in db.session.scalars(db.select(StaffUser).order_by(StaffUser.email)):
        state = "active" if user.active else "deactivated"
        click.echo(f"{user.email:40} {user.role:10} {state}")


@users.command("deactivate")
@click.argument("email")
def users_deactivate(email: str) -> None:
    """Stop a staff account from signing in (its history stays)."""
    from crm.staff.service import StaffError, deactivate_staff

    try:
        user = deactivate_staff(email)
    except StaffError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Deactivated {user.email}")


org_cli = AppGroup("org", help="The organisation's name, postal address, default sender and country.")


@org_cli.command("show")
def org_show() -> None:
    """Print the settings in effect (Settings over the environment)."""
    from crm.settings import org

    current = org.current()
    click.echo(f"name:           {current.name}")
    address = current.postal_address.replace("\n", ", ") or "(not set: campaigns cannot be sent)"
    click.echo(f"postal address: {address}")
    click.echo(f"default sender: {current.mail_from}")
    click.echo(f"country:        {current.country or '(not set)'}")


@org_cli.command("set")
@click.option("--name", help="The organisation's name.")
@click.option("--postal-address", help="Printed in every message's footer.")
@click.option("--mail-from", help="The default sender address.")
@click.option("--country", help="ISO 3166-1 code, e.g. GB.")
def org_set(name: str | None, postal_address: str | None, mail_from: str | None, country: str | None) -> None:
    """Change some of the settings (the others keep their value); audit-logged like the Settings page."""
    from crm.settings import org

    current = org.current()
    given = {"name": name, "postal_address": postal_address, "mail_from": mail_from, "country": country}
    data = {key: getattr(current, key) if value is None else value for key, value in given.items()}
    try:
        org.save(data)
    except org.SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("Saved.")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--no-scheduler", is_flag=True, help="Do not run RQ's scheduler in this worker.")
def worker_command(burst: bool, no_scheduler: bool) -> None:
    """Run an RQ worker on every queue of this app (any number may run, on any machine)."""
    from crm.services import check_services
    from workers.run import run_worker

    app = current_app._get_current_object()
    check_services(app)
    run_worker(app, burst=burst, with_scheduler=not no_scheduler)


@click.command("demo")
def demo_command() -> None:
    """Load demo petitions and supporters (only into an empty database)."""
    from crm.demo import load_demo_data

    click.echo(load_demo_data())


def init_app(app: Flask) -> None:
    from campaigns.cli import campaigns_cli
    from crm.imports.cli import import_group
    from crm.supporters.cli import supporters_cli
    from feedback.cli import bounces_cli, suppression_cli
    from reports.cli import reports_cli
    from tracking.cli import tracking_cli

    app.cli.add_command(users)
    app.cli.add_command(org_cli)
    app.cli.add_command(import_group)
    app.cli.add_command(worker_command)
    app.cli.add_command(demo_command)
    app.cli.add_command(supporters_cli)
    app.cli.add_command(campaigns_cli)
    app.cli.add_command(bounces_cli)
    app.cli.add_command(suppression_cli)
    app.cli.add_command(tracking_cli)
    app.cli.add_command(reports_cli)


def _create_app() -> Flask:
    from crm import create_app

    return create_app()


def _group() -> FlaskGroup:
    from crm.devserver import dev_command

    group = FlaskGroup(create_app=_create_app, help="Supporter CRM and email campaign manager.")
    group.add_command(dev_command)
    return group


def main() -> None:
    try:
        _group().main(prog_name="crm")
    except ConfigError as exc:
        click.echo(f"Configuration error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
