"""Job functions the queue runs. Each opens its own app context; a failure raises."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from markupsafe import escape

from campaigns.transport import SMTPTransport
from crm.settings import org
from workers import job_app


def build_test_message(app, address: str) -> EmailMessage:
    """The delivery check, from the organisation's settings in effect (inside an app context)."""
    settings = org.current()
    msg = EmailMessage()
    msg["From"] = f"{settings.name} <{settings.mail_from}>"
    msg["To"] = address
    msg["Subject"] = f"[TEST] Mail delivery check from {settings.name}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or None)
    msg.set_content(f"This test message shows that {settings.name}'s CRM can deliver mail.\n")
    msg.add_alternative(
        f"<p>This test message shows that <strong>{escape(settings.name)}</strong>'s CRM can deliver mail.</p>",
        subtype="html",
    )
    return msg


def send_test_message(address: str) -> str:
    """Send a one-off test message through the configured transport; returns its Message-ID."""
    app = job_app()
    with app.app_context():
        msg = build_test_message(app, address)
        with SMTPTransport.for_app(app) as transport:
            transport.send(org.current().mail_from, [address], msg.as_string())
        return msg["Message-ID"]
