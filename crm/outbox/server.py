"""The outbox SMTP server: aiosmtpd on 127.0.0.1 writing every message into a Maildir."""

from __future__ import annotations

import socket

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
    # hostname must be given: None binds ::1 only. aiosmtpd checks readiness by connecting
    # to the configured port, so port 0 is resolved to a free port first.
    controller = Controller(OutboxHandler(directory), hostname="127.0.0.1", port=port or free_port())
    controller.start()
    return controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
