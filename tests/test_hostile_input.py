"""Garbage to every route, as anonymous and as each role: whatever arrives, never a 5xx.

The walker first asks each route (as the role walking it, if that role may use it) which query
arguments, form fields and JSON it reads (the request's MultiDicts note every name looked
up), then sends each of those fields a NUL and other control characters, a file part, 100 KB
of text, invalid UTF-8 (escaped and raw, urlencoded and multipart), repeated keys, and
numbers no column can hold; JSON routes get documents with the same in them, nested too
deep, of the wrong shape, and not UTF-8.
Rows behind every URL id are real (tests/walk.py), so requests reach the views' work.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from werkzeug.datastructures import ImmutableMultiDict

from crm.auth.permissions import PUBLIC, ROLE_PERMISSIONS, access_rule
from tests import walk

JSON = "(json)"
BIG_NUMBER = "9" * 30
HUGE = "x" * 100_000
HUGE_PER_REQUEST = 4  # fields of 100 KB in one request: Werkzeug refuses a form over 500 KB


class _NotedDict(ImmutableMultiDict):
    """A request MultiDict that notes every key a view looks up."""

    noted: set[str] | None = None

    def _note(self, key) -> None:
        if _NotedDict.noted is not None and isinstance(key, str):
            _NotedDict.noted.add(key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)

    def getlist(self, key, type=None):  # noqa: A002 (Werkzeug's signature)
        self._note(key)
        return super().getlist(key, type)


@dataclass
class Probe:
    fields: set[str] = field(default_factory=set)
    reads_json: bool = False


def noting_requests(app) -> None:
    """Make `app`'s requests note what they read (see _NotedDict)."""
    base = app.request_class

    class NotingRequest(base):
        parameter_storage_class = _NotedDict

        def get_json(self, *args, **kwargs):
            if _NotedDict.noted is not None:
                _NotedDict.noted.add(JSON)
            return super().get_json(*args, **kwargs)

    app.request_class = NotingRequest


PROBE_FIELD = "probe"


def probe(app, route: walk.Route, role: str | None, staff: dict[str, int]) -> Probe:
    """What `route` reads when `role` sends it nothing in particular.

    Not quite nothing: Flask-WTF hands a form no data at all when the body is empty, and the
    form's fields then look nothing up."""
    _NotedDict.noted = noted = set()
    data = {PROBE_FIELD: ""} if route.method != "GET" else None
    try:
        walk.client_for(app, role, staff).open(route.url, method=route.method, data=data)
    finally:
        _NotedDict.noted = None
    return Probe(fields=noted - {JSON, "csrf_token", PROBE_FIELD}, reads_json=JSON in noted)


def _multipart(parts: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """A multipart/form-data body from (name, raw bytes, filename or None) parts, bytes as given."""
    boundary = "garbage-boundary-7f3a"
    chunks = []
    for name, raw, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + raw + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _urlencoded(pairs: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()


def payloads(route: walk.Route, found: Probe) -> Iterator[tuple[str, dict]]:
    """(name, test-client keyword arguments) for each piece of garbage worth sending to `route`."""
    names = sorted(found.fields) or ["q"]
    post = route.method != "GET"

    def values(pairs: list[tuple[str, str]], name: str):
        if post:
            return name, {"data": _urlencoded(pairs), "content_type": "application/x-www-form-urlencoded"}
        return name, {"query_string": _urlencoded(pairs).decode()}

    for label, text in (("NUL", "Nu\x00ll"), ("escape", "\x1b[2J"), ("DEL", "a\x7f"), ("C1", "a\x85b")):
        yield values([(n, text) for n in names], label)
    yield values([(n + "\x00", "x") for n in names], "NUL in a name")
    for start in range(0, len(names), HUGE_PER_REQUEST):
        yield values([(n, HUGE) for n in names[start:start + HUGE_PER_REQUEST]], f"100 KB from {names[start]}")
    yield values([(n, BIG_NUMBER) for n in names], "big numbers")
    yield values([(n, "9999999999") for n in names], "numbers past INTEGER")  # SQLite takes them, PostgreSQL not
    yield values([(n, v) for n in names for v in ("1", "-1", "", "ok")], "repeated keys")
    yield values([(n, "%ED%A0%80%C3%28%FF") for n in names], "invalid UTF-8 escaped")
    raw = b"\xff\xfe\xed\xa0\x80\xc3("
    if post:
        yield "invalid UTF-8 raw", {"data": b"&".join(n.encode() + b"=" + raw for n in names),
                                    "content_type": "application/x-www-form-urlencoded"}
        body, content_type = _multipart([(n, raw, None) for n in names])
        yield "invalid UTF-8 multipart", {"data": body, "content_type": content_type}
        body, content_type = _multipart([(n, b"not text", "garbage.bin") for n in names])
        yield "file parts", {"data": body, "content_type": content_type}
        body, content_type = _multipart([(n, raw, "garbage.csv") for n in names] + [(n, b"x", None) for n in names])
        yield "file and text under each name", {"data": body, "content_type": content_type}
    else:
        # QUERY_STRING holds the request's bytes as Latin-1 (PEP 3333).
        yield "invalid UTF-8 raw", {"query_string": b"&".join(n.encode() + b"=" + raw for n in names).decode("latin-1")}
    if found.reads_json:
        yield from json_payloads()


def json_payloads() -> Iterator[tuple[str, dict]]:
    keys = ("rules", "segment_id", "supporter_id", "name", "subject", "preheader", "mjml", "text_body")
    tree = {"op": "all", "rules": [{"field": "postal_code", "op": "starts_with", "values": ["N1"]}]}
    documents = {
        "JSON NUL": {**{k: "a\x00b" for k in keys}, "rules": {"op": "all", "rules": [{"field": "x\x00"}]}},
        "JSON 100 KB": {**{k: HUGE for k in keys}, "rules": {**tree, "rules": [{**tree["rules"][0],
                                                                                  "values": [HUGE]}]}},
        "JSON big numbers": {**{k: 10**30 for k in keys}, "rules": {**tree, "rules": [{**tree["rules"][0],
                                                                                        "values": [10**30]}]}},
        "JSON wrong types": {**{k: [{"a": []}] for k in keys}, "rules": [tree, None, 1.5, True]},
        "JSON nested": {"rules": {"op": "all", "rules": [{"op": "any", "rules": [tree] * 3}] * 20}},
        "JSON list": [tree], "JSON string": "rules", "JSON null": None,
    }
    for name, document in documents.items():
        yield name, {"data": json.dumps(document), "content_type": "application/json"}
    deep = "[" * 50_000 + "]" * 50_000
    yield "JSON too deep", {"data": deep, "content_type": "application/json"}
    yield "JSON not UTF-8", {"data": b'{"rules": "\xff\xfe"}', "content_type": "application/json"}
    yield "JSON malformed", {"data": b'{"rules": ', "content_type": "application/json"}


def address_garbage(route: walk.Route) -> Iterator[tuple[str, str]]:
    """The route's URL with each free-text part (slug, token, key, file name) replaced by garbage."""
    for name in route.string_arguments:
        for label, text in (("NUL", "%00"), ("escape", "%1B"), ("invalid UTF-8", "%FF%FE"), ("long", "a" * 5000)):
            yield f"{label} as {name}", route.url.replace(_url_part(route, name), text, 1)


def _url_part(route: walk.Route, name: str) -> str:
    return {"filename": "app.css"}.get(name) or route.url.rstrip("/").split("/")[_position(route, name)]


def _position(route: walk.Route, name: str) -> int:
    return {"slug": 2, "token": 2, "key": 2, "provider": 2, "name": 3, "tracking_token": 2, "index": 3,
            "preferences_token": 2, "confirm_token": 2}[name]


def allowed(app, role: str | None, endpoint: str) -> bool:
    rule = access_rule(app, endpoint)
    return rule == PUBLIC or (role is not None and rule in ROLE_PERMISSIONS[role])


@pytest.mark.parametrize("role", [None, *walk.ROLES])
def test_no_garbage_reaches_a_5xx(app, role):
    """NUL, control characters, files, 100 KB fields, bad UTF-8, repeats, huge numbers and bad JSON: no 5xx."""
    noting_requests(app)
    world = walk.make_world()
    staff: dict[str, int] = {}
    problems: list[str] = []
    sent = 0

    def send(route: walk.Route, label: str, url: str, **kwargs) -> None:
        nonlocal sent
        sent += 1
        try:
            response = walk.client_for(app, role, staff).open(url, method=route.method, **kwargs)
        except Exception as exc:  # the app raised: in testing mode Flask lets it through
            problems.append(f"{route.method} {route.endpoint} [{label}]: "
                            f"{''.join(traceback.format_exception_only(exc)).strip()[:300]}")
            return
        if response.status_code >= 500:
            problems.append(f"{route.method} {route.endpoint} [{label}]: {response.status_code}")

    for route in walk.routes(app, world):
        found = probe(app, route, role, staff) if allowed(app, role, route.endpoint) else Probe()
        for label, kwargs in payloads(route, found):
            send(route, label, route.url, **kwargs)
        for label, url in address_garbage(route):
            send(route, label, url)
    assert sent > 500  # the walk really walked
    assert problems == [], "\n".join(problems)
