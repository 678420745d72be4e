"""The bounce mailbox: read DSNs and complaint reports from IMAP or POP3, apply them, and move or
delete what was handled.

BOUNCE_MAILBOX_URL:
    imaps://user:pass@host[:993]/INBOX        IMAP over TLS (imap://...?tls=starttls, or plain imap://)
    pop3s://user:pass@host[:995]              POP3 over TLS (pop3:// plain)
  options in the query string:
    processed=Processed    move handled mail to this folder (IMAP; default: delete it)
    unrecognised=Unrecognised   where mail that is no report goes (IMAP; default that folder;
                                 empty: leave it, marked seen, and skip it next time)
    batch=200              messages fetched and applied per transaction

`crm bounces fetch` and the workers' periodic task (every BOUNCE_MAILBOX_INTERVAL_SECONDS, when
the URL is set) call fetch(). Each batch is applied in one transaction and committed before its
messages are moved or deleted, so a crash in between only means reading them again, and every
report's event id (its Message-ID and recipient) makes that second reading change nothing.
"""

from __future__ import annotations

import imaplib
import json
import logging
import poplib
import re
import ssl
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from flask import current_app

from crm.extensions import db
from feedback.apply import apply_feedback, check_complaint_rate
from feedback.dsn import parse_report

log = logging.getLogger(__name__)

SCHEMES = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
LAST_FETCH_KEY = "crm:bounces:last-fetch"
POP3_SKIPPED_KEY = "crm:bounces:pop3-skipped"
TIMEOUT = 30.0


class MailboxError(Exception):
    """The mailbox URL is wrong, or the server refused or failed."""


@dataclass(frozen=True)
class MailboxSettings:
    scheme: str
    host: str
    port: int
    username: str
    password: str
    folder: str = "INBOX"
    tls: str = "none"  # none | ssl | starttls
    processed: str = ""  # empty: delete
    unrecognised: str = "Unrecognised"
    batch: int = 200


def parse_mailbox_url(url: str) -> MailboxSettings:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise MailboxError("use imaps://user:pass@host/INBOX or pop3s://user:pass@host")
    if not parts.hostname:
        raise MailboxError("has no host")
    if not parts.username:
        raise MailboxError("has no user name")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise MailboxError("has an invalid port") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    tls = "ssl" if parts.scheme.endswith("s") else query.get("tls", "none")
    if tls not in ("none", "ssl", "starttls"):
        raise MailboxError("tls must be starttls (or use imaps:// / pop3s://)")
    try:
        batch = int(query.get("batch", "200"))
    except ValueError:
        raise MailboxError("batch must be a number") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return MailboxSettings(parts.scheme, parts.hostname, port, unquote(parts.username),
                           unquote(parts.password or ""), folder, tls, query.get("processed", ""),
                           query.get("unrecognised", "Unrecognised"), max(1, min(batch, 2000)))


def describe_mailbox(url: str) -> str:
    """The mailbox in words, with no password."""
    if not url:
        return "not configured (set BOUNCE_MAILBOX_URL)"
    try:
        s = parse_mailbox_url(url)
    except MailboxError as exc:
        return f"invalid: {exc}"
    where = f"{s.scheme}://{s.username}@{s.host}:{s.port}"
    if s.scheme.startswith("imap"):
        where += f"/{s.folder}; handled mail is " + (f"moved to {s.processed}" if s.processed else "deleted")
    return where


@dataclass
class FetchResult:
    read: int = 0
    applied: int = 0
    duplicate: int = 0
    unmatched: int = 0
    ignored: int = 0  # reports that ask for nothing: delays, successes, not-spam
    unrecognised: int = 0  # mail that is no report
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _verp() -> tuple[str, str] | None:
    config = current_app.config
    address = config.get("BOUNCE_ADDRESS") or ""
    if not config.get("BOUNCE_VERP") or "@" not in address:
        return None
    local, _, domain = address.rpartition("@")
    return local, domain


def _apply_batch(raws: list[tuple[object, bytes]], result: FetchResult) -> tuple[list, list]:
    """Apply a batch in one transaction; returns (handled keys, unrecognised keys)."""
    handled, unrecognised, complained = [], [], set()
    verp = _verp()
    for key, raw in raws:
        result.read += 1
        reports = parse_report(raw, verp)
        if reports is None:
            unrecognised.append(key)
            result.unrecognised += 1
            continue
        handled.append(key)
        if not reports:
            result.ignored += 1
        for fb in reports:
            outcome = apply_feedback(fb, commit=False)
            if outcome.outcome in ("applied", "duplicate", "unmatched", "ignored"):
                setattr(result, outcome.outcome, getattr(result, outcome.outcome) + 1)
            if fb.kind == "complaint" and outcome.outcome == "applied":
                complained.add(outcome.campaign_id)
    db.session.commit()
    for campaign_id in complained:
        check_complaint_rate(campaign_id)
    return handled, unrecognised


def fetch(url: str | None = None) -> FetchResult:
    """Read the whole bounce mailbox once; returns the counts (also kept for the settings page)."""
    url = url or current_app.config.get("BOUNCE_MAILBOX_URL") or ""
    if not url:
        raise MailboxError("BOUNCE_MAILBOX_URL is not set")
    settings = parse_mailbox_url(url)
    started = time.monotonic()
    result = FetchResult()
    try:
        if settings.scheme.startswith("imap"):
            _fetch_imap(settings, result)
        else:
            _fetch_pop3(settings, result)
    except (OSError, imaplib.IMAP4.error, poplib.error_proto) as exc:
        db.session.rollback()
        result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        _remember(result, started)
        raise MailboxError(f"the mailbox failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    _remember(result, started)
    log.info("bounce mailbox: %s", {k: v for k, v in asdict(result).items() if v})
    return result


def _remember(result: FetchResult, started: float) -> None:
    from crm.redis_conn import get_redis

    result.seconds = round(time.monotonic() - started, 2)
    try:
        get_redis().set(LAST_FETCH_KEY, json.dumps({**asdict(result), "at": time.time()}), ex=30 * 86400)
    except Exception:  # noqa: BLE001 - the counts are a courtesy for the settings page
        log.warning("could not keep the bounce mailbox counts in Redis")


def last_fetch() -> dict | None:
    from crm.redis_conn import get_redis

    try:
        raw = get_redis().get(LAST_FETCH_KEY)
    except Exception:  # noqa: BLE001
        return None
    return json.loads(raw) if raw else None


# -- IMAP ---------------------------------------------------------------------------------------

def _imap(settings: MailboxSettings) -> imaplib.IMAP4:
    if settings.tls == "ssl":
        conn = imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=ssl.create_default_context(),
                                 timeout=TIMEOUT)
    else:
        conn = imaplib.IMAP4(settings.host, settings.port, timeout=TIMEOUT)
        if settings.tls == "starttls":
            conn.starttls(ssl.create_default_context())
    conn.login(settings.username, settings.password)
    return conn


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(reply, what: str):
    typ, data = reply
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what}: {data!r}"[:200])
    return data


def _fetch_imap(settings: MailboxSettings, result: FetchResult) -> None:
    conn = _imap(settings)
    try:
        _check(conn.select(_quoted(settings.folder)), "SELECT")
        for folder in {settings.processed, settings.unrecognised} - {""}:
            conn.create(_quoted(folder))  # NO when it exists already: fine
        can_move = b"MOVE" in b" ".join(_check(conn.capability(), "CAPABILITY")).upper()
        search = "UNSEEN" if not settings.unrecognised else "ALL"
        uids = b" ".join(_check(conn.uid("SEARCH", None, search), "SEARCH")).split()
        for start in range(0, len(uids), settings.batch):
            chunk = uids[start:start + settings.batch]
            raws = _imap_messages(conn, chunk)
            handled, unrecognised = _apply_batch(raws, result)
            _imap_dispose(conn, handled, settings.processed, can_move)
            if settings.unrecognised:
                _imap_dispose(conn, unrecognised, settings.unrecognised, can_move)
            elif unrecognised:
                conn.uid("STORE", b",".join(unrecognised), "+FLAGS.SILENT", r"(\Seen)")
        conn.close()
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


_UID = re.compile(rb"UID (\d+)")


def _imap_messages(conn: imaplib.IMAP4, uids: list[bytes]) -> list[tuple[bytes, bytes]]:
    data = _check(conn.uid("FETCH", b",".join(uids), "(UID BODY.PEEK[])"), "FETCH")
    out = []
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            found = _UID.search(item[0])
            if found:
                out.append((found.group(1), item[1]))
    return out


def _imap_dispose(conn: imaplib.IMAP4, uids: list[bytes], folder: str, can_move: bool) -> None:
    """Move `uids` to `folder` (RFC 6851 MOVE, else COPY and delete), or delete them if no folder."""
    if not uids:
        return
    group = b",".join(uids)
    if folder and can_move:
        _check(conn.uid("MOVE", group, _quoted(folder)), "MOVE")
        return
    if folder:
        _check(conn.uid("COPY", group, _quoted(folder)), "COPY")
    _check(conn.uid("STORE", group, "+FLAGS.SILENT", r"(\Deleted)"), "STORE")
    _check(conn.expunge(), "EXPUNGE")


# -- POP3 ---------------------------------------------------------------------------------------

def _fetch_pop3(settings: MailboxSettings, result: FetchResult) -> None:
    from crm.redis_conn import get_redis

    if settings.tls == "ssl":
        conn = poplib.POP3_SSL(settings.host, settings.port, context=ssl.create_default_context(), timeout=TIMEOUT)
    else:
        conn = poplib.POP3(settings.host, settings.port, timeout=TIMEOUT)
        if settings.tls == "starttls":
            conn.stls(ssl.create_default_context())
    try:
        conn.user(settings.username)
        conn.pass_(settings.password)
        redis = get_redis()
        skipped = {s.decode() if isinstance(s, bytes) else s for s in redis.smembers(POP3_SKIPPED_KEY)}
        listing = []
        for line in conn.uidl()[1]:
            number, uid = line.decode("ascii", "replace").split(" ", 1)
            if uid not in skipped:
                listing.append((int(number), uid))
        for start in range(0, len(listing), settings.batch):
            chunk = listing[start:start + settings.batch]
            raws = [((n, uid), b"\r\n".join(conn.retr(n)[1])) for n, uid in chunk]
            handled, unrecognised = _apply_batch(raws, result)
            for n, _uid in handled:
                conn.dele(n)
            if unrecognised:
                redis.sadd(POP3_SKIPPED_KEY, *[uid for _n, uid in unrecognised])
        conn.quit()  # deletions take effect only on QUIT (RFC 1939 section 6)
    except BaseException:
        conn.close()
        raise
