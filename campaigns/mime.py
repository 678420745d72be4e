"""Per-recipient MIME built from a skeleton computed once per campaign.

The standard library's EmailMessage costs about 4.5 ms for a 20 KB multipart/alternative message
here (header folding and quoted-printable in Python), several times the SMTP cost. The parts that
never change (From, Reply-To, List-Id, the MIME structure) are encoded once; per recipient we add
the few changing headers and quoted-printable bodies (binascii, in C). Tests parse every shape
back with the `email` package to prove it is what a mail client expects.

Standards: RFC 5322 (CRLF line ends, lines under 78 characters where we can fold and always
under 998), RFC 2047 (encoded words for non-ASCII display names and subjects), RFC 2045
(quoted-printable; its lines stay under 76 characters), RFC 2046 (multipart/alternative, plain
text first), RFC 2369 and RFC 8058 (List-Unsubscribe with One-Click), RFC 2919 (List-Id).
"""

from __future__ import annotations

import binascii
import re
import secrets
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

CRLF = b"\r\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_ASCII_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


def clean_header_value(value: str) -> str:
    """Collapse every control character (CR and LF above all) to a space: no header injection."""
    return " ".join(_CONTROL.sub(" ", value or "").split())


def encode_header(name: str, value: str) -> bytes:
    """One header field, RFC 2047-encoded when needed and folded to 78 characters, ending CRLF."""
    value = clean_header_value(value)
    if _ASCII_PRINTABLE.match(value) and len(name) + 2 + len(value) <= 78:
        return f"{name}: {value}".encode("ascii") + CRLF
    charset = "us-ascii" if _ASCII_PRINTABLE.match(value) else "utf-8"
    encoded = Header(value, charset, header_name=name).encode(linesep="\r\n", maxlinelen=78)
    return f"{name}: {encoded}".encode("ascii") + CRLF


def encode_address(name: str, address: str) -> str:
    """`Display Name <addr>` with the name quoted or RFC 2047-encoded; the address must be clean."""
    address = clean_header_value(address)
    if any(c in address for c in " <>,;\"") or "@" not in address:
        raise ValueError("not a plain email address")
    return formataddr((clean_header_value(name), address), charset="utf-8")


def _address_header(field: str, name: str, address: str) -> bytes:
    value = encode_address(name, address)
    if len(field) + 2 + len(value) > 78 and " <" in value:
        display, _, addr = value.rpartition(" <")
        return f"{field}: {display}\r\n <{addr}".encode("ascii") + CRLF
    return f"{field}: {value}".encode("ascii") + CRLF


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends (soft breaks keep lines under 76)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() or "localhost"


class MessageSkeleton:
    """Everything about a campaign's messages that does not depend on the recipient."""

    def __init__(self, *, from_name: str, from_address: str, reply_to: str = "", list_name: str,
                 campaign_id: int, unsubscribe_mailto: str = ""):
        self.domain = domain_of(from_address)
        self.campaign_id = campaign_id
        self.unsubscribe_mailto = clean_header_value(unsubscribe_mailto)
        # "=_" cannot occur in quoted-printable output, so the boundary never collides with a body.
        self.boundary = f"=_crm_{campaign_id}_{secrets.token_hex(8)}"
        head = [
            _address_header("From", from_name, from_address),
            _address_header("Reply-To", "", reply_to) if reply_to else b"",
            encode_header("List-Id", f"{clean_header_value(list_name)} <campaigns.{self.domain}>"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",  # RFC 8058 section 3.1
            f"X-Campaign-ID: {campaign_id}".encode("ascii") + CRLF,
            f"Feedback-ID: {campaign_id}:campaigns:{self.domain}".encode("ascii") + CRLF,
            b"MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"'.encode("ascii") + CRLF,
        ]
        self.static_headers = b"".join(head)
        b = self.boundary.encode("ascii")
        self.text_open = (b"--" + b + CRLF + b'Content-Type: text/plain; charset="utf-8"' + CRLF
                          + b"Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF)
        self.html_open = (CRLF + b"--" + b + CRLF + b'Content-Type: text/html; charset="utf-8"' + CRLF
                          + b"Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF)
        self.close = CRLF + b"--" + b + b"--" + CRLF

    def message_id(self, message_db_id: int | str) -> str:
        return f"<{message_db_id}.{self.campaign_id}.{secrets.token_hex(6)}@{self.domain}>"

    def build(self, *, to_address: str, to_name: str, subject: str, text: str, html: str, message_id: str,
              unsubscribe_url: str, message_ref: str, date: datetime) -> bytes:
        """The complete message as CRLF bytes, ready for smtplib.

        `message_ref` ("campaign.message") goes in X-Message-Ref for matching bounces; the mailto
        unsubscribe, when configured, carries the URL's signed token so it cannot be forged.
        """
        url = clean_header_value(unsubscribe_url)
        unsubscribe = f"<{url}>"
        if self.unsubscribe_mailto:
            token = url.rstrip("/").rsplit("/", 1)[-1]
            unsubscribe += f",\r\n <mailto:{self.unsubscribe_mailto}?subject=unsubscribe-{token}>"
        head = b"".join((
            _address_header("To", to_name, to_address),
            encode_header("Subject", subject),
            f"Date: {format_datetime(date)}".encode("ascii") + CRLF,
            f"Message-ID: {message_id}".encode("ascii") + CRLF,
            # The https URL stays on the header's first line (folding before it leaves a leading
            # space some parsers keep); it can exceed 78 characters, never 998 (RFC 5322 2.1.1).
            f"List-Unsubscribe: {unsubscribe}".encode("ascii") + CRLF,
            f"X-Message-Ref: {clean_header_value(message_ref)}".encode("ascii") + CRLF,
            self.static_headers,
        ))
        return b"".join((head, CRLF, self.text_open, quoted_printable(text), self.html_open,
                         quoted_printable(html), self.close))
