"""Job functions the queue runs. Each opens its own app context; a failure raises."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from markupsafe import escape

from campaigns.transport import SMTPTransport
from workers import job_app


def build_test_message(app, address: str) -> EmailMessage:
    cfg = app.config
    org = escape(cfg["ORG_NAME"])
    msg = EmailMessage()
    msg["From"] = f"{cfg['ORG_NAME']} <{cfg['MAIL_FROM']}>"
    msg["To"] = address
    msg["Subject"] = f"[TEST] Mail delivery check from {cfg['ORG_NAME']}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=cfg["MAIL_FROM"].rpartition("@")[2] or None)
    msg.set_content(f"This test message shows that {cfg['ORG_NAME']}'s CRM can deliver mail.\n")
    msg.add_alternative(
        f"<p>This test message shows that <strong>{org}</strong>'s CRM can deliver mail.</p>",
        subtype="html",
    )
    return msg


def send_test_message(address: str) -> str:
    """Send a one-off test message through the configured transport; returns its Message-ID."""
    app = job_app()
    with app.app_context():
        msg = build_test_message(app, address)
        with SMTPTransport.for_app(app) as transport:
            transport.send(app.config["MAIL_FROM"], [address], msg.as_string())
        return msg["Message-ID"]
