"""Composing: MJML compiled once per campaign version, personalised per recipient with sandboxed Jinja.

The MJML source is compiled to HTML once (mjml-python keeps `{{ ... }}` placeholders intact), the
organisation's footer with its postal address and a visible unsubscribe link is added whatever
the template says, and the result is compiled into a Jinja template in a sandboxed environment.
Per recipient the only work left is `render(context)`: Jinja substitution, HTML-escaped in the
HTML part. Problems are found when staff save, with the line in the source they wrote, never at
send time: syntax errors, unknown filters, unknown variables and unknown supporter fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import mjml
from flask import current_app, has_app_context
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment

# What templates may use. `supporter.custom.<key>` reads a custom field.
SUPPORTER_FIELDS = frozenset({"first_name", "last_name", "full_name", "email", "postal_code", "country",
                              "petitions", "custom"})
ORG_FIELDS = frozenset({"name", "postal_address"})
CAMPAIGN_FIELDS = frozenset({"subject", "preheader", "name"})
TOP_LEVEL = {"supporter": SUPPORTER_FIELDS, "org": ORG_FIELDS, "campaign": CAMPAIGN_FIELDS,
             "unsubscribe_url": None, "preferences_url": None}

SAMPLE_SUPPORTER = {"first_name": "Amina", "last_name": "Haddad", "full_name": "Amina Haddad",
                    "email": "amina@example.net", "postal_code": "N1 9GU", "country": "GB",
                    "petitions": ["A fair and humane asylum system"], "custom": {}}

# Added to every message after the template's own content (CAN-SPAM: a postal address; Gmail and
# Yahoo bulk-sender rules and RFC 8058's companion guidance: a visible unsubscribe link).
FOOTER_HTML = """
<div class="crm-footer" style="margin:0 auto;max-width:600px;padding:24px 16px;font-family:Arial,Helvetica,sans-serif;
font-size:12px;line-height:18px;color:#555;text-align:center;">
<p style="margin:0 0 8px;">You receive these periodic email updates from {{ org.name }} because you asked for them.</p>
<p style="margin:0 0 8px;">{{ org.name }} · {{ org.postal_address }}</p>
<p style="margin:0;"><a href="{{ unsubscribe_url }}" style="color:#555;text-decoration:underline;">Unsubscribe</a>
from these emails at any time, or <a href="{{ preferences_url }}" style="color:#555;text-decoration:underline;">change
your details or pause these emails</a>.</p>
</div>
"""
FOOTER_TEXT = """

--
You receive these periodic email updates from {{ org.name }} because you asked for them.
{{ org.name }}, {{ org.postal_address }}
Unsubscribe: {{ unsubscribe_url }}
Change your details or pause these emails: {{ preferences_url }}
"""
# Inbox preview text: hidden in the body, shown by mail clients beside the subject.
PREHEADER_HTML = ('<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;opacity:0;'
                  'overflow:hidden;mso-hide:all;">{{ campaign.preheader }}</div>')

_BODY_OPEN = re.compile(r"<body[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_TEXT_CONFIG = ParserConfig(display_links=True)


@dataclass(frozen=True)
class Problem:
    field: str  # subject | preheader | mjml | text_body
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class CompositionError(ValueError):
    """The campaign's content cannot be compiled; `problems` says where and why."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p}" for p in problems))

    def by_field(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.problems:
            out.setdefault(p.field, []).append(str(p))
        return out


class _Environment(SandboxedEnvironment):
    """Sandboxed: templates reach only plain data, never Python internals."""


_html_env = _Environment(autoescape=True, undefined=Undefined)
_text_env = _Environment(autoescape=False, undefined=Undefined)
_strict_env = _Environment(autoescape=True, undefined=StrictUndefined)


@dataclass(frozen=True)
class Rendered:
    """One recipient's message. The bodies are kept as the pieces Jinja produced: most pieces
    are the template's unchanging text, which campaigns.mime encodes once per campaign."""

    subject: str
    html_pieces: tuple[str, ...]
    text_pieces: tuple[str, ...]

    @property
    def html(self) -> str:
        return "".join(self.html_pieces)

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)


class CompiledCampaign:
    """The per-version result of compiling: three Jinja templates ready for render()."""

    def __init__(self, subject: str, html: str, text: str, preheader: str = "", links: tuple[str, ...] = (),
                 tracks_opens: bool = False):
        self.html_source = html
        # The tracked links of the HTML part by index (tracking.links), and whether it has the pixel:
        # the renderer then gives each message its click_base and open_url.
        self.links = links
        self.tracks_opens = tracks_opens
        self.text_source = text
        self._subject = _text_env.from_string(subject)
        self._preheader = _text_env.from_string(preheader) if "{" in preheader else None
        self._html = _html_env.from_string(html)
        self._text = _text_env.from_string(text)
        self.subject_is_static = "{" not in subject

    def render(self, context: dict[str, Any]) -> Rendered:
        subject = " ".join(self._subject.render(context).split())  # never a line break in a header
        # The body may show the subject and preheader ({{ campaign.subject }} in <mj-title>, the
        # hidden preheader): as this recipient reads them, never as template source.
        shown = {**context.get("campaign", {}), "subject": subject}
        if self._preheader is not None:
            shown["preheader"] = " ".join(self._preheader.render(context).split())
        context = {**context, "campaign": shown}
        return Rendered(subject, tuple(self._html.generate(context)), tuple(self._text.generate(context)))


def compile_mjml(source: str) -> str:
    """MJML -> HTML with no third-party font requests; ValueError carries mjml's message."""
    return mjml.mjml2html(source, disable_comments=True, fonts={})


def html_to_text(html: str) -> str:
    """A readable plain-text part from HTML: links kept as [text](url), layout padding trimmed."""
    text = get_text(html, _TEXT_CONFIG)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _with_footer(html: str) -> str:
    html = _BODY_OPEN.sub(lambda m: m.group(0) + PREHEADER_HTML, html, count=1)
    if _BODY_CLOSE.search(html):
        return _BODY_CLOSE.sub(lambda m: FOOTER_HTML + m.group(0), html, count=1)
    return html + FOOTER_HTML


@lru_cache(maxsize=64)
def _compile(subject: str, preheader: str, mjml_source: str, text_body: str, track_opens: bool = False,
             track_clicks: bool = False, known_links: tuple[str, ...] = ()) -> CompiledCampaign:
    from tracking.links import add_pixel, rewrite_links

    html = compile_mjml(mjml_source)
    # The plain-text part is made before any rewriting: it keeps the real URLs.
    text = text_body.strip() + "\n" if text_body.strip() else html_to_text(html)
    html = _with_footer(html)
    links: tuple[str, ...] = ()
    if track_clicks:
        html, links = rewrite_links(html, known_links)
    if track_opens:
        html = add_pixel(html)
    return CompiledCampaign(subject, html, text.rstrip("\n") + FOOTER_TEXT, preheader, links, track_opens)


def compile_campaign(campaign, *, tracking: bool = True, known_links: tuple[str, ...] = ()) -> CompiledCampaign:
    """The compiled templates for the campaign's current content (cached per content).

    With `tracking`, links and the pixel as the campaign's switches say; previews and test sends
    pass False, so nothing they show is counted and every link goes straight to its page.
    `known_links`: tracked links numbered before this content's (see tracking.links.rewrite_links).
    """
    problems = check_content(campaign.subject, campaign.preheader, campaign.mjml, campaign.text_body)
    if problems:
        raise CompositionError(problems)
    return _compile(campaign.subject, campaign.preheader or "", campaign.mjml, campaign.text_body,
                    bool(tracking and getattr(campaign, "track_opens", False)),
                    bool(tracking and getattr(campaign, "track_clicks", False)), tuple(known_links))


def check_content(subject: str, preheader: str, mjml_source: str, text_body: str) -> list[Problem]:
    """Every problem staff should fix before saving, with lines in the source they wrote."""
    problems: list[Problem] = []
    if not subject.strip():
        problems.append(Problem("subject", None, "A subject is required."))
    if "\n" in subject or "\r" in subject:
        problems.append(Problem("subject", None, "The subject must be one line."))
    for field, source in (("subject", subject), ("preheader", preheader), ("mjml", mjml_source),
                          ("text_body", text_body)):
        problems.extend(_check_template(field, source))
    if not mjml_source.strip():
        problems.append(Problem("mjml", None, "The body is empty."))
    elif not any(p.field == "mjml" for p in problems):
        try:
            html = compile_mjml(mjml_source)
        except ValueError as exc:
            problems.append(Problem("mjml", None, f"MJML: {exc}"))
        else:
            tags = mjml_tag_problems(mjml_source)
            problems.extend(tags or _trial_render("mjml", _with_footer(html)))
    return problems


_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_MJ_TAG = re.compile(r"<(/?)(mjml|mj-[a-z-]+)\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>", re.IGNORECASE)
# MJML elements that take no content, so `<mj-image src="...">` needs no closing tag.
_MJ_VOID = frozenset({"mj-image", "mj-divider", "mj-spacer", "mj-carousel-image", "mj-breakpoint", "mj-font",
                      "mj-all", "mj-class", "mj-include", "mj-social-element", "mj-html-attribute"})


def mjml_tag_problems(source: str) -> list[Problem]:
    """Closing tags that do not match what is open (`<mj-text>...</mj-button>`), with their lines.

    mjml-python accepts some such mismatches silently and drops or reshapes content, so they
    are refused here like its own parse errors. Only MJML's own tags are paired; the HTML
    inside mj-text and friends is the mail's and is left to MJML.
    """
    text = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), source)
    open_tags: list[tuple[str, int]] = []
    problems: list[Problem] = []
    for match in _MJ_TAG.finditer(text):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        line = text.count("\n", 0, match.start()) + 1
        if not closing:
            if not self_closing:
                open_tags.append((name, line))
            continue
        while open_tags and open_tags[-1][0] != name and open_tags[-1][0] in _MJ_VOID:
            open_tags.pop()
        if open_tags and open_tags[-1][0] == name:
            open_tags.pop()
        elif any(tag == name for tag, _ in open_tags):
            inner, opened = open_tags[-1]
            problems.append(Problem("mjml", line, f"MJML: </{name}> closes <{inner}> opened on line {opened}; "
                                                  f"close it with </{inner}> first"))
            return problems
        else:
            expected = f"; <{open_tags[-1][0]}> (line {open_tags[-1][1]}) is still open" if open_tags else ""
            problems.append(Problem("mjml", line, f"MJML: </{name}> has no matching <{name}>{expected}"))
            return problems
    return problems


def _check_template(field: str, source: str) -> list[Problem]:
    if not source:
        return []
    try:
        tree = _strict_env.parse(source)
        _strict_env.compile(source)  # unknown filters and tests surface here, with their line
    except TemplateSyntaxError as exc:
        return [Problem(field, exc.lineno, exc.message or "template syntax error")]
    except TemplateError as exc:
        return [Problem(field, getattr(exc, "lineno", None), str(exc))]
    return _check_names(field, tree)


def _check_names(field: str, tree: nodes.Template) -> list[Problem]:
    """Unknown variables and unknown fields of supporter/org/campaign, found in the syntax tree."""
    problems = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in TOP_LEVEL and name.name not in assigned:
            problems.append(Problem(field, name.lineno, f"unknown variable “{name.name}”; use "
                                    + ", ".join(sorted(TOP_LEVEL))))
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Name) and attr.node.name in TOP_LEVEL:
            allowed = TOP_LEVEL[attr.node.name]
            if allowed is not None and attr.attr not in allowed:
                problems.append(Problem(field, attr.lineno, f"“{attr.node.name}” has no field “{attr.attr}”; "
                                        f"known fields: {', '.join(sorted(allowed))}"))
    return problems


def _trial_render(field: str, html: str) -> list[Problem]:
    """Render the compiled HTML once with a full sample, so run-time errors show before sending."""
    try:
        _strict_env.from_string(html).render(sample_context())
    except TemplateError as exc:
        return [Problem(field, None, f"the template fails when rendered: {exc}")]
    return []


def org_context(config) -> dict[str, str]:
    """What templates see as `org`.

    Given the running app's own config, the organisation's settings in effect
    (crm.settings.org.current(): Settings over the environment); given any other mapping (a
    test of composing alone), that mapping's ORG_NAME and ORG_POSTAL_ADDRESS.
    """
    if has_app_context() and config is current_app.config:
        from crm.settings import org

        return org.current().as_context()
    return {"name": config["ORG_NAME"], "postal_address": config.get("ORG_POSTAL_ADDRESS") or ""}


def campaign_context(campaign) -> dict[str, str]:
    return {"subject": campaign.subject, "preheader": campaign.preheader, "name": campaign.name}


def supporter_context(first_name: str = "", last_name: str = "", email: str = "", postal_code: str = "",
                      country: str = "", petitions: list[str] | None = None,
                      custom: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `supporter` holds in a template. Empty fields are left out, so `default(...)` applies."""
    values = {"first_name": first_name, "last_name": last_name,
              "full_name": " ".join(p for p in (first_name, last_name) if p), "email": email,
              "postal_code": postal_code, "country": country}
    context: dict[str, Any] = {k: v for k, v in values.items() if v}
    context["petitions"] = list(petitions or [])
    context["custom"] = {k: v for k, v in (custom or {}).items() if isinstance(k, str)}
    return context


def sample_context(config=None, campaign=None) -> dict[str, Any]:
    return {"supporter": dict(SAMPLE_SUPPORTER),
            "org": org_context(config) if config else {"name": "Org", "postal_address": "1 Street"},
            "campaign": campaign_context(campaign) if campaign else {"subject": "", "preheader": "", "name": ""},
            "unsubscribe_url": "https://example.org/u/sample", "preferences_url": "https://example.org/preferences/sample"}


def sample_subject(campaign, config) -> str:
    """The subject as the sample supporter reads it (what the preview shows), not its template
    source; the source itself when it does not render (the editor reports why)."""
    if "{" not in (campaign.subject or ""):
        return campaign.subject or ""
    try:
        return " ".join(_text_env.from_string(campaign.subject).render(sample_context(config, campaign)).split())
    except TemplateError:
        return campaign.subject


def preview(campaign, config, supporter: dict[str, Any] | None = None) -> Rendered:
    """Render as a chosen supporter (or the sample one); the unsubscribe link goes nowhere."""
    context = sample_context(config, campaign)
    if supporter is not None:
        context["supporter"] = supporter
    context["unsubscribe_url"] = "#unsubscribe-preview"
    context["preferences_url"] = "#preferences-preview"
    return compile_campaign(campaign, tracking=False).render(context)

