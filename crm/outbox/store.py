"""The outbox is a Maildir under instance/outbox: aiosmtpd writes it, the staff page reads it."""

from __future__ import annotations

import mailbox
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

_parser = BytesParser(policy=policy.default)


@dataclass
class OutboxEntry:
    key: str
    message: EmailMessage
    received: float

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", "(no subject)"))

    @property
    def sender(self) -> str:
        return str(self.message.get("From", ""))

    @property
    def recipient(self) -> str:
        return str(self.message.get("X-RcptTo") or self.message.get("To", ""))

    def body(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else None


def open_maildir(directory: str) -> mailbox.Maildir:
    for sub in ("tmp", "new", "cur"):
        (Path(directory) / sub).mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(directory, factory=None, create=True)


def list_messages(directory: str, limit: int = 200) -> list[OutboxEntry]:
    """Newest first."""
    box = open_maildir(directory)
    stamped = []
    for key in box.iterkeys():
        path = Path(directory) / box._lookup(key)
        stamped.append((path.stat().st_mtime, key, path))
    stamped.sort(reverse=True)
    return [OutboxEntry(key, _parser.parsebytes(path.read_bytes()), mtime) for mtime, key, path in stamped[:limit]]


def get_message(directory: str, key: str) -> OutboxEntry | None:
    box = open_maildir(directory)
    try:
        path = Path(directory) / box._lookup(key)
    except KeyError:
        return None
    return OutboxEntry(key, _parser.parsebytes(path.read_bytes()), path.stat().st_mtime)


def raw_message(directory: str, key: str) -> bytes | None:
    box = open_maildir(directory)
    try:
        return box.get_bytes(key)
    except KeyError:
        return None


def clear(directory: str) -> None:
    box = open_maildir(directory)
    for key in list(box.iterkeys()):
        box.discard(key)
