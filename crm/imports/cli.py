"""`crm import supporters FILE`: the same engine as the web import, run in the terminal."""

from __future__ import annotations

import click
from flask.cli import AppGroup

import_group = AppGroup("import", help="Import data from files.")


@import_group.command("supporters")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--petition", "petition_slug", help="Add every imported row as a signature of this petition.")
@click.option("--petition-wording", is_flag=True,
              help="Record the petition's consent wording for opted-in rows.")
@click.option("--tag", "tags", multiple=True, help="Tag to add (repeatable; created if missing).")
@click.option("--consent-column", help="Column whose yes (yes, y, true, 1, x, oui, ja, sí...) marks an opted-in row.")
@click.option("--map", "maps", multiple=True, metavar="COL=field",
              help="Map a column to a field (email, first_name, last_name, postal_code, country, "
                   "consent, comment, signed_at, ignore); overrides the header guesses.")
def import_supporters(file: str, petition_slug: str | None, petition_wording: bool, tags: tuple[str, ...],
                      consent_column: str | None, maps: tuple[str, ...]) -> None:
    """Import supporters from a CSV or XLSX file, printing the counts and the rejected-rows file."""
    from crm.extensions import db
    from crm.filters import count_of
    from crm.imports import service
    from crm.imports.engine import file_info, run_import
    from crm.models import Petition

    try:
        job = service.register_file(file)
    except service.UnreadableFile as exc:
        raise click.ClickException(str(exc)) from None
    header = file_info(job).header
    mapping = dict(job.mapping)
    for item in maps:
        column, sep, field_name = item.partition("=")
        if not sep or column not in header:
            db.session.rollback()
            raise click.ClickException(f"--map {item!r}: expected COL=field with COL one of {header}")
        mapping[column] = field_name.strip()
    if consent_column:
        if consent_column not in header:
            db.session.rollback()
            raise click.ClickException(f"--consent-column {consent_column!r} is not a column of the file")
        mapping = {c: ("ignore" if f == "consent" else f) for c, f in mapping.items()}
        mapping[consent_column] = "consent"
    petition_id = None
    if petition_slug:
        petition_id = db.session.scalar(db.select(Petition.id).filter_by(slug=petition_slug))
        if petition_id is None:
            db.session.rollback()
            raise click.ClickException(f"No petition with slug {petition_slug!r}")
    try:
        service.configure(job, mapping, petition_id=petition_id, petition_wording=petition_wording,
                          tags=", ".join(tags), consent="column")
    except service.ImportSetupError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    job.status = "queued"
    db.session.commit()
    click.echo(f"Import {job.id}: {job.filename}; mapping " +
               ", ".join(f"{c} -> {f}" for c, f in job.mapping.items() if f != "ignore"))

    with click.progressbar(length=1, label="Importing", show_pos=True) as bar:
        def progress(job) -> None:
            bar.length = max(job.total_rows, 1)
            bar.update(job.processed_rows - bar.pos)

        try:
            job = run_import(job, progress)
        except Exception as exc:
            raise click.ClickException(f"Import failed: {exc}") from None
    click.echo(f"{job.total_rows} rows: {job.created_count} created, {job.updated_count} updated, "
               f"{job.unchanged_count} unchanged, {job.rejected_count} rejected")
    if job.consent_unrecognised_count:
        values = ", ".join(f"{v!r} ({n})" for v, n in job.consent_unrecognised_values.items())
        click.echo(f"{count_of(job.consent_unrecognised_count, 'row', 'rows')} kept without recording consent "
                   f"(neither yes nor no): {values}")
    click.echo(f"Rejected rows: {job.rejected_path}")
