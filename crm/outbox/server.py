"""The outbox SMTP server: aiosmtpd on 127.0.0.1 writing every message into a Maildir."""

from __future__ import annotations

from aiosmtpd.controller import Controller

from crm.outbox.store import open_maildir


class OutboxHandler:
    """Store each message byte for byte, with its envelope prepended as X-MailFrom/X-RcptTo."""

    def __init__(self, directory: str):
        self.box = open_maildir(directory)

    async def handle_DATA(self, server, session, envelope):
        envelope_head = (
            f"X-MailFrom: {envelope.mail_from}\r\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        self.box.add(envelope_head + envelope.original_content)
        return "250 Message accepted for delivery"


def start_outbox(directory: str, port: int = 0) -> Controller:
    """Start the sink on 127.0.0.1 (port 0 picks a free one); returns the running controller."""
    # hostname must be given: None binds ::1 only.
    controller = Controller(OutboxHandler(directory), hostname="127.0.0.1", port=port)
    controller.start()
    if port == 0:
        controller.port = controller.server.sockets[0].getsockname()[1]
    return controller
