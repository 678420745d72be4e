"""`crm reports ...`: refresh the roll-ups, and export engagement data from the terminal."""

from __future__ import annotations

from datetime import date

import click
from flask.cli import AppGroup

reports_cli = AppGroup("reports", help="Report roll-ups and engagement exports.")


@reports_cli.command("refresh")
@click.option("--full", is_flag=True, help="Recompute every roll-up from the facts, not only what changed.")
def refresh_command(full: bool) -> None:
    """Bring the report roll-ups up to date now (the worker does it every REPORTS_REFRESH_SECONDS)."""
    from reports.rollups import refresh

    done = refresh(full=full)
    click.echo(f"Refreshed {len(done.campaigns)} campaigns, {len(done.days)} days and {done.petition_days} "
               f"petition days in {done.duration_ms} ms{' (full)' if done.full else ''}.")


def _day(_ctx, _param, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected a date as YYYY-MM-DD") from None


@reports_cli.command("export")
@click.argument("kind", type=click.Choice(["engagement", "summary"]))
@click.option("--since", callback=_day, help="Messages sent on or after this UTC date (YYYY-MM-DD).")
@click.option("--until", callback=_day, help="Messages sent on or before this UTC date (YYYY-MM-DD).")
@click.option("--campaign", "campaigns", type=click.IntRange(1, 2**31 - 1), multiple=True,
              help="Only this campaign's messages (repeatable).")
@click.option("--segment", type=click.IntRange(1, 2**31 - 1), help="Only messages to this segment's supporters.")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "parquet"]),
              help="Output format (default: from the file's extension, else csv).")
@click.option("--with-email", is_flag=True, help="Include email addresses.")
@click.option("--by", "by_email", help="Staff address the audit log records as the exporter.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True)
def export_command(kind, since, until, campaigns, segment, fmt, with_email, by_email, output) -> None:
    """Export engagement data (one row per message, or a per-supporter summary) to a file, with a progress bar."""
    from crm.extensions import db
    from crm.models import StaffUser
    from reports import exports

    fmt = fmt or next((f for f in exports.FORMATS if output.lower().endswith(f".{f}")), "csv")
    filters = exports.Filters(since=since, until=until, campaign_ids=list(campaigns), segment_id=segment)
    try:
        exports.check(filters)
    except exports.ExportProblem as exc:
        raise click.ClickException(str(exc)) from None
    actor = None
    if by_email:
        actor = db.session.scalar(db.select(StaffUser).where(StaffUser.email == by_email.strip().lower()))
        if actor is None:
            raise click.ClickException(f"No staff account {by_email}.")
    total = exports.count_rows(kind, filters)
    if fmt == "xlsx" and total > exports.XLSX_MAX_ROWS:
        raise click.ClickException(f"{total:,} rows do not fit in one Excel worksheet: use csv or parquet.")
    with click.progressbar(length=max(total, 1), label=f"Exporting {total:,} rows", show_pos=True) as bar:
        done = [0]

        def progress(rows: int) -> None:
            bar.update(rows - done[0])
            done[0] = rows

        with open(output, "wb") as handle:
            rows = exports.write_file(kind, fmt, filters, with_email, handle, progress)
        bar.update(max(total, 1) - done[0])
    db.session.rollback()
    exports.record(kind, fmt, filters, with_email, rows, actor_id=actor.id if actor else None)
    click.echo(f"Wrote {rows:,} rows to {output} ({fmt}).")
