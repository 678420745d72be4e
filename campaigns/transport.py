"""SMTP transport: one reusable connection to SMTP_URL, or to the dev outbox when unset."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable

from flask import Flask

from campaigns.mime import ascii_address
from crm.config import parse_smtp_url

DEFAULT_OUTBOX_PORT = 8025

# 5xx replies that mean "this address does not exist" (RFC 3463 enhanced codes 5.1.x; the basic
# codes 550/551/553 with wording relays use when they send no enhanced code).
_USER_UNKNOWN = re.compile(r"\b5\.1\.[0-3]\b|\b5\.1\.10\b|user unknown|no such user|unknown user|"
                           r"does not exist|invalid recipient", re.IGNORECASE)


def _dot_stuffed(message: bytes) -> bytes:
    """The DATA content (RFC 5321 4.5.2): lines starting "." get another, then CRLF "." CRLF.

    The message must already use CRLF line ends (campaigns.mime builds it so)."""
    data = (b"." if message.startswith(b".") else b"") + message.replace(b"\n.", b"\n..")
    return data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")


def _path(address: str) -> str:
    """An envelope address as SMTP writes it, <local@domain> (RFC 5321 4.1.2).

    Addresses reach us validated (crm.emails); one that could still break the command line
    (spaces, angle brackets, line breaks) is refused rather than sent.
    """
    if not address or "@" not in address or any(c in address for c in " <>\r\n\t"):
        raise PermanentFailure(None, "not a deliverable envelope address")
    return f"<{address}>"


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


class Declined(Exception):
    """The caller declined to send the content once the envelope was accepted. The connection
    was closed before any of it went out, which aborts the transaction: a server must not
    deliver a message whose DATA never ended (RFC 5321 section 4.1.1.4)."""


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
        self._awaiting = False  # start() handed over a message whose final reply is unread
        self._announced: tuple[str, str] | None = None  # an envelope written ahead, replies unread

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

    def deliver(self, sender: str, recipient: str, message: bytes,
                proceed: Callable[[], bool] | None = None) -> None:
        """Send one message to one recipient and wait for the relay's verdict."""
        self.start(sender, recipient, message, proceed)
        self.finish()

    def announce(self, sender: str, recipient: str) -> None:
        """Write the next message's envelope now, behind the content of the one in flight.

        PIPELINING (RFC 2920) lets a client send MAIL, RCPT and DATA without waiting for the
        reply to the content before them, so the relay answers them while the caller renders
        that next message; start() then finds the replies waiting. Once DATA is accepted the
        content must follow (or the connection be dropped), so announce only what will be
        started. Does nothing without an open, pipelining connection or for an address start()
        will refuse: start() then does the whole envelope itself. (Checked against Postfix 3.7's
        smtpd with smtpd_forbid_unauth_pipelining = yes, which drops clients that pipeline where
        RFC 2920 forbids it: it accepts this.)
        """
        smtp = self._smtp
        if smtp is None or self._announced is not None or not smtp.has_extn("pipelining"):
            return
        try:
            commands = self._envelope(smtp, sender, recipient)
            smtp.send(commands)
        except PermanentFailure:
            return
        except (smtplib.SMTPException, OSError):
            self.drop()  # start() opens a fresh connection and says if that fails
            return
        self._announced = (sender, recipient)

    def start(self, sender: str, recipient: str, message: bytes,
              proceed: Callable[[], bool] | None = None) -> None:
        """Hand one message to the relay without waiting for its final reply; finish() reads it.

        `proceed`, if given, is asked once the relay has accepted the envelope, the last moment
        before the content goes out; when it says no, the connection is closed and Declined
        raised, and nothing is delivered.

        Between the two the caller can prepare the next message while the relay reads this one.
        With PIPELINING MAIL, RCPT and DATA go out in one write (or went out ahead, see
        announce) and their three replies come back together. MAIL and RCPT failures are safe
        to retry; once the content is going out, a dropped connection is not
        (UncertainDelivery). An address that needs SMTPUTF8 (RFC 6531) is refused for good
        when the relay does not offer it.
        """
        if self._awaiting:
            raise RuntimeError("finish() the message in flight first")
        announced, self._announced = self._announced, None
        if announced is not None and announced != (sender, recipient):
            self.drop()
            raise RuntimeError("start() a different message than the one announced")
        try:
            if announced is not None:
                smtp = self._smtp
                replies = [smtp.getreply(), smtp.getreply(), smtp.getreply()]
            else:
                smtp = self._session()
                commands = self._envelope(smtp, sender, recipient)
                if smtp.has_extn("pipelining"):
                    smtp.send(commands)
                    replies = [smtp.getreply(), smtp.getreply(), smtp.getreply()]
                else:
                    replies = []
                    for command in commands.split(b"\r\n")[:3]:
                        smtp.send(command + b"\r\n")
                        replies.append(smtp.getreply())
                        if replies[-1][0] not in (250, 251, 354):
                            break
        except (smtplib.SMTPException, OSError) as exc:
            self.drop()
            raise TemporaryFailure(None, f"{type(exc).__name__}: {exc}") from None
        for (code, reply), accepted in zip(replies, ((250,), (250, 251), (354,)), strict=False):
            if code not in accepted:
                if replies[-1][0] == 354:  # DATA accepted after a refusal (RFC 2920 3.1): end it empty
                    self._end_empty_data()
                self._reset_transaction()
                raise _refusal(code, reply)
        if proceed is not None and not proceed():
            self.drop()
            raise Declined()
        try:
            smtp.send(_dot_stuffed(message))
        except (smtplib.SMTPException, OSError) as exc:
            self.drop()
            raise UncertainDelivery(None, f"{type(exc).__name__}: {exc}") from None
        self._awaiting = True

    def finish(self) -> None:
        """The relay's verdict on the message start() handed over: returns if it was accepted.

        A refusal ends that transaction by itself (RFC 5321 4.1.1.4), so nothing is reset: an
        envelope announced behind it is already on its way."""
        if not self._awaiting:
            raise RuntimeError("no message in flight")
        self._awaiting = False
        try:
            code, reply = self._smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self.drop()
            raise UncertainDelivery(None, f"{type(exc).__name__}: {exc}") from None
        if code != 250:  # the relay answered: nothing was accepted
            raise _refusal(code, reply)

    def withdraw(self) -> None:
        """Give up an announced envelope: its DATA may already be accepted, and only closing the
        connection ends that without sending content. Read finish() first."""
        if self._announced is not None:
            self.drop()

    @staticmethod
    def _envelope(smtp: smtplib.SMTP, sender: str, recipient: str) -> bytes:
        """MAIL, RCPT and DATA for one message, or PermanentFailure for an address we cannot send.

        An internationalised domain goes out in its ASCII (IDNA) form; only a non-ASCII local
        part needs SMTPUTF8."""
        sender, recipient = ascii_address(sender), ascii_address(recipient)
        utf8 = not (sender.isascii() and recipient.isascii())
        if utf8 and not smtp.has_extn("smtputf8"):
            raise PermanentFailure(None, "the address needs SMTPUTF8 (RFC 6531), which the relay does not offer")
        return (f"MAIL FROM:{_path(sender)}{' SMTPUTF8' if utf8 else ''}\r\n"
                f"RCPT TO:{_path(recipient)}\r\nDATA\r\n").encode()

    def _session(self) -> smtplib.SMTP:
        """The open, greeted connection, or TemporaryFailure without a code."""
        try:
            smtp = self.connect()
            smtp.ehlo_or_helo_if_needed()
            return smtp
        except (smtplib.SMTPException, OSError) as exc:
            # No usable session at all (refused, TLS or login failed): a relay problem, never a
            # verdict on this recipient, so it carries no code and the pipeline pauses on it.
            self.drop()
            raise TemporaryFailure(None, f"{type(exc).__name__}: {exc}") from None

    def _end_empty_data(self) -> None:
        try:
            self._smtp.send(b".\r\n")
            self._smtp.getreply()
        except (smtplib.SMTPException, OSError):
            self.drop()

    def _reset_transaction(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.drop()

    def drop(self) -> None:
        """Forget a broken connection without the QUIT handshake."""
        smtp, self._smtp, self._awaiting, self._announced = self._smtp, None, False, None
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

    def send(self, sender: str, recipients: list[str], message: bytes | str) -> None:
        """Send one message; smtplib raises SMTPResponseException subclasses on refusal."""
        self.connect().sendmail(sender, recipients, message)

    def close(self) -> None:
        if self._awaiting or self._announced:  # replies nobody will read: QUIT would be answered out of turn
            self.drop()
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
