"""Logging: one format for the app, and no supporter's data in a log line, whatever fails.

A database error used to log what it was given. SQLAlchemy's message carries the statement's
bound parameters (`[parameters: {'email': ..., 'ip': ..., 'user_agent': ...}]`), and
PostgreSQL's own message quotes the row in its DETAIL (`Key (email)=(ada@example.net) already
exists`, `Failing row contains (...)`), so any request that reached a 500 on PostgreSQL wrote a
full email address, an IP and a user agent to the log, and anyone could trigger one.

Request lines are the other leak: `GET /api/v1/people?filter=email_address eq '...'` (or a
supporter search) would put an address in the dev server's log and in gunicorn's access log.
Both log through Python's logging, so the same record factory withholds every query value
that is not a plain number in their records (the parameters' names stay, for reading the log).
The signed tokens in the public paths (`/u/`, `/preferences/`, `/confirm/`, `/o/`, `/c/`) hold
no address, but each is a capability (it unsubscribes, edits or confirms someone), so request
lines show those paths with the token withheld: `GET /u/… HTTP/1.1`.

Two defences against database errors, both here:
- the engine is built with `hide_parameters=True` (crm.database reads ENGINE_DEFAULTS), so
  SQLAlchemy's messages never hold parameters;
- every log record, from any logger and to any handler, passes through a record factory
  that rewrites a database error (in the record's exception, or among its arguments) with
  the statement, the exception's class, SQLSTATE and constraint, and without the driver's
  message, which may quote the data.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import traceback

import psycopg
from sqlalchemy.exc import StatementError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENGINE_DEFAULTS = {"hide_parameters": True}
WITHHELD = "message withheld from the log: it may quote the data"
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _diagnosis(exc: BaseException) -> str:
    """What a PostgreSQL error says about itself without quoting data: SQLSTATE, constraint, table, column."""
    if not isinstance(exc, psycopg.Error):
        return ""
    diag = exc.diag
    known = [("SQLSTATE", exc.sqlstate), ("constraint", diag.constraint_name), ("table", diag.table_name),
             ("column", diag.column_name)]
    return "; ".join(f"{label} {value}" for label, value in known if value)


def quotes_data(exc: BaseException) -> bool:
    """Whether str(exc) may hold a statement's data: SQLAlchemy's statement errors and PostgreSQL's errors."""
    return isinstance(exc, StatementError | psycopg.Error)


def safe_message(exc: BaseException) -> str:
    """str(exc), or for a database error what can be said without the data it may quote."""
    if isinstance(exc, StatementError):
        orig = exc.orig
        about = f"{_name(orig)}: {_diagnosis(orig) or WITHHELD}" if orig is not None else WITHHELD
        if isinstance(orig, sqlite3.Error):  # SQLite's messages name constraints and columns, never values
            about = f"{_name(orig)}: {orig}"
        return f"({about})\n[SQL: {exc.statement}]"
    if isinstance(exc, psycopg.Error):
        return f"{_diagnosis(exc) or 'no SQLSTATE'}; {WITHHELD}"
    return str(exc)


def safe_traceback(exc: BaseException) -> str:
    """The traceback Python would print for `exc` and its chain, each database error's message made safe."""
    chain: list[tuple[BaseException, str]] = []  # newest first, each with how it led to the one before
    seen: set[int] = set()
    current, link = exc, ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts = []
    for error, link in reversed(chain):
        if error.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(error.__traceback__))
        if quotes_data(error):
            parts.append(f"{_name(error)}: {safe_message(error)}\n")
        else:
            parts.extend(traceback.format_exception_only(error))
        parts.append(link)
    return "".join(parts).rstrip("\n")


# Loggers that write request lines: Werkzeug's server (`crm dev`) and gunicorn's access log.
REQUEST_LOGGERS = ("werkzeug", "gunicorn.access")
_QUERY = re.compile(r"\?([^\s\"]*)")
# A public path's token: the segment after /u/, /preferences/, /confirm/, /o/ or /c/ where the path
# begins (after the method, a quote, or a URL's host), so /campaigns/3/... is left alone.
TOKEN_PATHS = ("u", "preferences", "confirm", "o", "c")
_TOKEN = re.compile(r"((?:^|[\s\"]|//[^/\s\"]+)/(?:" + "|".join(TOKEN_PATHS) + r"))/[^/\s?\"]+")


def redact_query(query: str) -> str:
    """A query string fit for a log line: every parameter's name kept, its value withheld unless a plain number.

    `filter=email_address eq '...'`, a supporter search, a preference link: any value may hold
    an address, URL-encoded or not; `page=3` cannot."""
    parts = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        parts.append(part if not value or value.isdigit() else f"{name}{sep}…")
    return "&".join(parts)


def redact_request_line(line: str) -> str:
    """A request line or URL with its query string redacted (redact_query) and a public path's token withheld."""
    if "?" in line:
        line = _QUERY.sub(lambda match: "?" + redact_query(match.group(1)), line)
    return _TOKEN.sub(r"\1/…", line)


def _redact_request(record: logging.LogRecord) -> None:
    args = record.args
    if isinstance(args, tuple):  # Werkzeug: '"%s" %s %s' % (request line, status, size)
        record.args = tuple(redact_request_line(a) if isinstance(a, str) else a for a in args)
    elif isinstance(args, dict):  # gunicorn: the atoms of access_log_format, in its own dict class
        for key, value in list(args.items()):
            if key == "q" and isinstance(value, str):
                args[key] = redact_query(value)
            elif isinstance(value, str) and "/" in value:  # the request line, the path, the referer, RAW_URI...
                args[key] = redact_request_line(value)
    if isinstance(record.msg, str) and not args:
        record.msg = redact_request_line(record.msg)


def withhold_data(record: logging.LogRecord) -> logging.LogRecord:
    """Make `record` safe to write: database errors in its exception and arguments lose their data, and
    request lines their query strings' values."""
    if record.name in REQUEST_LOGGERS:
        _redact_request(record)
    if record.exc_info and record.exc_info[1] is not None and any(
            quotes_data(e) for e in _chain(record.exc_info[1])):
        record.exc_text = safe_traceback(record.exc_info[1])
    if isinstance(record.args, tuple) and any(isinstance(a, BaseException) and quotes_data(a) for a in record.args):
        record.args = tuple(safe_message(a) if isinstance(a, BaseException) and quotes_data(a) else a
                            for a in record.args)
    return record


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def install_record_factory() -> None:
    """Pass every log record of this process through withhold_data (once, however many apps are built)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "withholds_data", False):
        return

    def factory(*args, **kwargs):
        return withhold_data(previous(*args, **kwargs))

    factory.withholds_data = True
    logging.setLogRecordFactory(factory)


def init_app(app) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    install_record_factory()


def logged_path(path: str, view_args: dict | None) -> str:
    """The request path fit for a log line: the URL's token arguments (unsubscribe and other
    capability links, which act for a supporter without a login) replaced by "…"."""
    for name, value in (view_args or {}).items():
        if "token" in name and isinstance(value, str) and value:
            path = path.replace(value, "…")
    return path
