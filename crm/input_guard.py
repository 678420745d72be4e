"""Every request's input checked once, before any view reads it.

Three kinds of input reached a 500 through one form or another, and each would reach the
next form written too, so they are refused here, for every route, rather than field by field:

- NUL. PostgreSQL refuses it in text ("PostgreSQL text fields cannot contain NUL (0x00)
  bytes"), so a `%00` in any field that reaches the database (a name, a comment, a slug in
  the URL, a segment rule's value) was a DataError. The other control characters are
  refused with it: nobody types them, they only arrive by accident or on purpose, and they
  break what is made of the text later (CSV and XLSX exports, email headers, log lines).
- a file where text is expected. Flask-WTF gives a form the files and the fields together,
  so `email=@file` in a multipart body put a FileStorage where wtforms expects a string
  ("object of type 'FileStorage' has no len()"). Only a view that declares a file field
  with @accepts_files receives one.
- JSON nested beyond what the parser can take: json.loads raises RecursionError, which
  Flask's get_json does not catch.

The rules, for query arguments, form fields (names and values), the variable parts of the
URL, and every string of a JSON body (keys and values):

- any Unicode text is accepted except the control characters (Unicode category Cc) other
  than tab, line feed and carriage return; a request carrying one is answered 400 with a
  message naming the field (as JSON, {"error": ...}, to a JSON request);
- a file part is a 400 naming the field, unless the view declared it with @accepts_files;
- a view marked @reads_raw_body (the relays' webhooks) gets its body unread and unchecked:
  it authenticates the bytes as they came and bounds and cleans what it keeps itself;
- invalid UTF-8 never gets here as bytes: Werkzeug decodes it as U+FFFD replacement
  characters (or keeps a bad %XX escape as its text), ordinary text like any other;
- the User-Agent header, stored with every consent event, is cleaned instead of refused:
  its control characters are dropped before anything reads it (a browser never sends any).

Imports apply the same definition of a control character to the cells of uploaded files
(crm.imports.reader), where the rule is to clean, not to refuse the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from flask import Flask, current_app, jsonify, request

from crm.errors import render_error

# Unicode category Cc (C0, DEL and C1) except tab, line feed and carriage return.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a character this app refuses in input (see CONTROL_CHARACTERS)."""
    return CONTROL_CHARACTERS.search(text) is not None


def strip_control_characters(text: str) -> str:
    """`text` without the characters this app refuses in input."""
    return CONTROL_CHARACTERS.sub("", text)


# The largest value of an INTEGER column (ids, versions); PostgreSQL refuses more, SQLite past 2**63.
INTEGER_MAX = 2**31 - 1


def positive_int(value) -> int | None:
    """A whole number from a request that fits an INTEGER column (1 .. 2**31-1), else None.

    For ids and versions in query arguments and form fields: int() takes "9" * 30, which the
    database refuses when it arrives as a parameter (a 500), and takes "-1", which names nothing.
    """
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= INTEGER_MAX else None


def accepts_files(*names: str) -> Callable:
    """Mark a view as taking uploaded files in the form fields `names` (any other file part is a 400)."""
    def mark(view: Callable) -> Callable:
        view.file_fields = frozenset(names)
        return view

    return mark


def reads_raw_body(view: Callable) -> Callable:
    """Mark a view that reads, authenticates and parses its own raw body (the relays' webhooks):
    its body is left unread here, since a signature covers the bytes as they came and the view
    bounds and cleans what it keeps. Its URL parts and query arguments are still checked."""
    view.reads_raw_body = True
    return view


def answers_bad_input(answer: Callable[[], object]) -> Callable:
    """Mark a view that answers refused input its own way (the open pixel: always an image), not with the 400 page."""
    def mark(view: Callable) -> Callable:
        view.bad_input_answer = answer
        return view

    return mark


class BadInput(Exception):
    """One part of the request is not acceptable input; the message names it."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where} {problem}.")


CONTROL_PROBLEM = "contains a control character (such as NUL), which is not accepted"


def shown_name(name: str) -> str:
    """A field name or JSON path fit to show: control characters made visible, length bounded."""
    shown = CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", name)
    return f"“{shown[:80]}{'…' if len(shown) > 80 else ''}”"


def _json_strings(value) -> Iterator[tuple[str, str]]:
    """(path, string) for every key and string value of a parsed JSON document, walked without recursion."""
    stack = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            yield path or "(the body)", node
        elif isinstance(node, dict):
            for key, item in node.items():
                child = f"{path}.{key}" if path else key
                yield child, key
                stack.append((child, item))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(node))


def check_request() -> None:
    """Raise BadInput for the first part of the current request that breaks the rules above."""
    for value in (request.view_args or {}).values():
        if isinstance(value, str) and has_control_characters(value):
            raise BadInput("The address", CONTROL_PROBLEM)
    view = current_app.view_functions.get(request.endpoint)
    raw = getattr(view, "reads_raw_body", False)
    for source in (request.args,) if raw else (request.args, request.form):
        for name, value in source.items(multi=True):
            # Werkzeug gives a multipart part without a usable name the name None.
            if has_control_characters(name or "") or has_control_characters(value):
                raise BadInput(f"The field {shown_name(name or '')}", CONTROL_PROBLEM)
    if raw:
        return
    if request.files:
        allowed = getattr(view, "file_fields", frozenset())
        for name in request.files:
            if name not in allowed:
                raise BadInput(f"The field {shown_name(name or '')}", "expects text, not a file")
    if request.is_json:
        try:
            body = request.get_json(silent=True)  # cached: the view's own get_json costs nothing more
        except RecursionError:
            raise BadInput("The JSON body", "is nested too deeply") from None
        for path, text in _json_strings(body):
            if has_control_characters(text):
                raise BadInput(f"The JSON value at {shown_name(path)}", CONTROL_PROBLEM)


def _clean_user_agent() -> None:
    environ = request.environ
    agent = environ.get("HTTP_USER_AGENT")
    if agent and has_control_characters(agent):
        environ["HTTP_USER_AGENT"] = strip_control_characters(agent)


def guard():
    """before_request: clean the User-Agent; answer 400, naming the field, for input refused above."""
    _clean_user_agent()
    try:
        check_request()
    except BadInput as exc:
        answer = getattr(current_app.view_functions.get(request.endpoint), "bad_input_answer", None)
        if answer is not None:
            return answer()
        if request.is_json or request.path.startswith("/api/"):  # the API answers JSON to everything
            return jsonify(error=str(exc)), 400
        return render_error(400, str(exc))
    return None


def init_app(app: Flask) -> None:
    app.before_request(guard)
