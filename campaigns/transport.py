"""SMTP transport: one reusable connection to SMTP_URL, or to the dev outbox when unset."""

from __future__ import annotations

import re
import smtplib
import ssl

from flask import Flask

from crm.config import parse_smtp_url

DEFAULT_OUTBOX_PORT = 8025

# 5xx replies that mean "this address does not exist" (RFC 3463 enhanced codes 5.1.x; the basic
# codes 550/551/553 with wording relays use when they send no enhanced code).
_USER_UNKNOWN = re.compile(r"\b5\.1\.[0-3]\b|\b5\.1\.10\b|user unknown|no such user|unknown user|"
                           r"does not exist|invalid recipient", re.IGNORECASE)


class DeliveryError(Exception):
    """A message was not delivered; subclasses say whether to retry."""

    def __init__(self, code: int | None, reply: str):
        self.code, self.reply = code, reply[:500]
        super().__init__(f"{code or 'connection'} {self.reply}".strip())


class TemporaryFailure(DeliveryError):
    """Not accepted, try again later: a 4xx reply, or no usable connection."""


class PermanentFailure(DeliveryError):
    """Refused for good (5xx). `user_unknown` marks an address that does not exist."""

    @property
    def user_unknown(self) -> bool:
        return self.code in (550, 551, 553) and bool(_USER_UNKNOWN.search(self.reply))


class UncertainDelivery(DeliveryError):
    """The connection died after the message data went out: it may have been delivered.
    Never retried, so nobody gets it twice (RFC 5321 section 4.1.1.4; RFC 1047)."""


def _refusal(code: int, reply: bytes | str) -> DeliveryError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return (PermanentFailure if code >= 500 else TemporaryFailure)(code, " ".join(text.split()))


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

    def deliver(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message to one recipient, saying precisely what went wrong if it fails.

        MAIL and RCPT failures are safe to retry; a dropped connection during DATA is not.
        """
        try:
            smtp = self.connect()
            smtp.ehlo_or_helo_if_needed()
        except (smtplib.SMTPException, OSError) as exc:
            # No usable session at all (refused, TLS or login failed): a relay problem, never a
            # verdict on this recipient, so it carries no code and the pipeline pauses on it.
            self.drop()
            raise TemporaryFailure(None, f"{type(exc).__name__}: {exc}") from None
        try:
            code, reply = smtp.mail(sender)
            if code != 250:
                self._reset_transaction()
                raise _refusal(code, reply)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                self._reset_transaction()
                raise _refusal(code, reply)
        except DeliveryError:
            raise
        except smtplib.SMTPResponseException as exc:
            self.drop()
            raise _refusal(exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:
            self.drop()
            raise TemporaryFailure(None, f"{type(exc).__name__}: {exc}") from None
        try:
            smtp.data(message)
        except smtplib.SMTPDataError as exc:  # the server answered: nothing was accepted
            self._reset_transaction()
            raise _refusal(exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:
            self.drop()
            raise UncertainDelivery(None, f"{type(exc).__name__}: {exc}") from None

    def _reset_transaction(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.drop()

    def drop(self) -> None:
        """Forget a broken connection without the QUIT handshake."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

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
