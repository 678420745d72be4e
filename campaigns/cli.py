"""`crm campaigns list|send|status|pause|resume|cancel`: the lifecycle from a terminal."""

from __future__ import annotations

import time

import click
from flask.cli import AppGroup

campaigns_cli = AppGroup("campaigns", help="Send and follow campaigns.")


def _campaign(campaign_id: int):
    from crm.extensions import db
    from crm.models import Campaign

    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise click.ClickException(f"No campaign {campaign_id}")
    return campaign


def _line(campaign) -> str:
    from campaigns.lifecycle import progress

    p = progress(campaign)
    eta = f", about {p.eta_seconds // 60} min {p.eta_seconds % 60} s left" if p.eta_seconds else ""
    reason = f" ({p.reason})" if p.reason else ""
    return (f"campaign {campaign.id} “{campaign.name}”: {p.status}{reason}; {p.sent}/{p.total} sent, "
            f"{p.failed} failed, {p.unknown} unknown, {p.suppressed} skipped, {p.queued + p.in_flight} to go; "
            f"{p.rate_per_minute}/min{eta}")


@campaigns_cli.command("list")
def list_command() -> None:
    """Every campaign with its status."""
    from crm.extensions import db
    from crm.models import Campaign

    for campaign in db.session.scalars(db.select(Campaign).order_by(Campaign.id)):
        click.echo(f"{campaign.id}\t{campaign.status}\t{campaign.name}")


@campaigns_cli.command("send")
@click.argument("campaign_id", type=int)
@click.option("--wait", is_flag=True, help="Follow progress until the campaign finishes (needs running workers).")
def send_command(campaign_id: int, wait: bool) -> None:
    """Send a draft or scheduled campaign now; workers deliver it."""
    from campaigns.lifecycle import LifecycleError, estimated_recipients, send_now
    from crm.extensions import db

    campaign = _campaign(campaign_id)
    try:
        count = estimated_recipients(campaign)
        send_now(campaign)
    except LifecycleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Campaign {campaign_id} queued for about {count} recipients.")
    while wait:
        time.sleep(2)
        db.session.expire_all()
        click.echo(_line(campaign))
        wait = campaign.status in ("scheduled", "sending")


@campaigns_cli.command("status")
@click.argument("campaign_id", type=int)
def status_command(campaign_id: int) -> None:
    """Print a campaign's progress: sent, failed, unknown, rate and ETA."""
    click.echo(_line(_campaign(campaign_id)))


def _transition(name: str, campaign_id: int) -> None:
    from campaigns import lifecycle

    campaign = _campaign(campaign_id)
    try:
        getattr(lifecycle, name)(campaign)
    except lifecycle.LifecycleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_line(campaign))


@campaigns_cli.command("pause")
@click.argument("campaign_id", type=int)
def pause_command(campaign_id: int) -> None:
    """Pause a sending campaign (every worker stops within a second)."""
    _transition("pause", campaign_id)


@campaigns_cli.command("resume")
@click.argument("campaign_id", type=int)
def resume_command(campaign_id: int) -> None:
    """Resume a paused campaign."""
    _transition("resume", campaign_id)


@campaigns_cli.command("cancel")
@click.argument("campaign_id", type=int)
def cancel_command(campaign_id: int) -> None:
    """Cancel a scheduled, sending or paused campaign; unsent messages are not sent."""
    _transition("cancel", campaign_id)
