"""`crm supporters ...`: command-line access to the supporter list."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from crm.models import EMAIL_STATUSES

supporters_cli = AppGroup("supporters", help="Supporter list tools.")


@supporters_cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default=None,
              help="Defaults to the file's extension, else csv.")
@click.option("--petition", type=int, help="Only signers of this petition id.")
@click.option("--status", type=click.Choice(EMAIL_STATUSES), help="Only this email status.")
@click.option("--segment", type=int, help="Only members of this saved segment id.")
def export_command(file: str, fmt: str | None, petition: int | None, status: str | None,
                   segment: int | None) -> None:
    """Export supporters to FILE (audit-logged like the web export)."""
    import shutil

    from crm import exports
    from crm.supporters import service

    fmt = fmt or ("xlsx" if file.lower().endswith(".xlsx") else "csv")
    flt = service.SupporterFilter(petition=petition, email_status=status or "", segment=segment)
    problem = service.segment_problem(flt)
    if problem:
        raise click.ClickException(problem)
    rows = service.count_supporters(flt)
    service.record_export(flt, fmt, rows)
    if fmt == "csv":
        with open(file, "w", encoding="utf-8", newline="") as out:
            for part in exports.stream_csv(service.EXPORT_HEADER, service.export_rows(flt)):
                out.write(part)
    else:
        spool = exports.xlsx_file(service.EXPORT_HEADER, service.export_rows(flt), title="Supporters")
        with spool, open(file, "wb") as out:
            shutil.copyfileobj(spool, out)
    from crm.filters import count_of

    click.echo(f"Exported {count_of(rows, 'supporter', 'supporters')} to {file}")
