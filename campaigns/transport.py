"""SMTP transport: one reusable connection to SMTP_URL, or to the dev outbox when unset."""

from __future__ import annotations

import smtplib
import ssl

from flask import Flask

from crm.config import parse_smtp_url

DEFAULT_OUTBOX_PORT = 8025


def smtp_settings(app: Flask) -> dict:
    """Connection settings for the configured relay, or for the local outbox."""
    if app.config.get("SMTP_URL"):
        return parse_smtp_url(app.config["SMTP_URL"])
    port = int(app.config.get("OUTBOX_SMTP_PORT", DEFAULT_OUTBOX_PORT))
    return {"host": "127.0.0.1", "port": port, "tls": "none", "username": None, "password": None}


def describe_smtp(app: Flask) -> str:
    """A one-line description with no secrets in it."""
    s = smtp_settings(app)
    target = f"{s['host']}:{s['port']} (tls: {s['tls']}{', with login' if s['username'] else ''})"
    return target if app.config.get("SMTP_URL") else f"dev outbox at {target}"


class SMTPTransport:
    """A connection opened on first use and reused until close(); also a context manager."""

    def __init__(self, settings: dict, timeout: float = 30.0):
        self.settings = settings
        self.timeout = timeout
        self._smtp: smtplib.SMTP | None = None

    @classmethod
    def for_app(cls, app: Flask) -> SMTPTransport:
        return cls(smtp_settings(app))

    def connect(self) -> smtplib.SMTP:
        if self._smtp is None:
            s = self.settings
            if s["tls"] == "ssl":
                smtp = smtplib.SMTP_SSL(s["host"], s["port"], timeout=self.timeout,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s["host"], s["port"], timeout=self.timeout)
                if s["tls"] == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s["username"]:
                smtp.login(s["username"], s["password"] or "")
            self._smtp = smtp
        return self._smtp

    def send(self, sender: str, recipients: list[str], message: bytes | str) -> None:
        """Send one message; smtplib raises SMTPResponseException subclasses on refusal."""
        self.connect().sendmail(sender, recipients, message)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def __enter__(self) -> SMTPTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
