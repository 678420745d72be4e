"""`crm tracking flush`: write the recorded opens and clicks to the database now."""

from __future__ import annotations

import click
from flask.cli import AppGroup

tracking_cli = AppGroup("tracking", help="Open and click tracking.")


@tracking_cli.command("flush")
@click.option("--batch", default=5000, show_default=True, help="Hits written per transaction.")
def flush_command(batch: int) -> None:
    """Flush every recorded hit from Redis into engagement_event (the workers do this every two seconds)."""
    from tracking.flush import flush

    click.echo(str(flush(batch=batch)))
