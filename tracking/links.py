"""Compile-time rewriting of the HTML part: tracked links and the open pixel.

The HTML is read with the standard library's HTML parser (a tokenizer that follows the HTML
rules for tags, attributes and comments, so a link inside an Outlook conditional comment or a
`>` inside a quoted attribute is not mistaken). Only the href values of <a> start tags are
replaced, in place, by their offsets: the rest of MJML's output stays byte for byte as it was,
and the Jinja placeholders in it survive for the per-recipient render.

Left alone: anything that is not http(s) (mailto:, tel:, anchors), and any href holding a Jinja
placeholder. That covers the footer's unsubscribe and preference links (which must never pass
through a redirect: RFC 8058 and the bulk-sender rules want them to work directly) and links
personalised per recipient, which no stored list could contain.
"""

from __future__ import annotations

from html.parser import HTMLParser

# In the compiled template; the renderer gives each message its own values.
CLICK_HREF = "{{ click_base }}/%d"
PIXEL_HTML = ('<img src="{{ open_url }}" width="1" height="1" alt="" '
              'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;" />')


def is_trackable(url: str) -> bool:
    """Whether a link is rewritten to pass through the click redirect."""
    url = url.strip()
    return url.lower().startswith(("http://", "https://")) and "{{" not in url and "{%" not in url


class _Links(HTMLParser):
    """Collects (start, end, url) of each <a href> value worth tracking, as offsets into the source."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self._line_starts = [0]
        for i, ch in enumerate(source):
            if ch == "\n":
                self._line_starts.append(i + 1)
        self.spans: list[tuple[int, int, str]] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag != "a":
            return
        url = next((value for name, value in attrs if name == "href" and value is not None), None)
        if url is None or not is_trackable(url):
            return
        line, col = self.getpos()
        start = self._line_starts[line - 1] + col
        raw = self.get_starttag_text() or ""
        span = _href_value_span(raw)
        if span is not None:
            self.spans.append((start + span[0], start + span[1], url.strip()))


def _href_value_span(tag: str) -> tuple[int, int] | None:
    """Offsets of the href attribute's value inside one start tag's text (quotes excluded)."""
    lower = tag.lower()
    pos = 0
    while True:
        found = lower.find("href", pos)
        if found < 0:
            return None
        before = lower[found - 1] if found else " "
        rest = found + 4
        while rest < len(tag) and tag[rest] in " \t\r\n":
            rest += 1
        if before in " \t\r\n\"'/" and rest < len(tag) and tag[rest] == "=":
            rest += 1
            while rest < len(tag) and tag[rest] in " \t\r\n":
                rest += 1
            if rest < len(tag) and tag[rest] in "\"'":
                end = tag.find(tag[rest], rest + 1)
                return (rest + 1, end) if end > 0 else None
            end = rest
            while end < len(tag) and tag[end] not in " \t\r\n>":
                end += 1
            return rest, end
        pos = found + 4


def rewrite_links(source: str, known: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """The HTML with every trackable link sent through the redirect, and the links by index.

    The same URL twice is one link (one index), so "clicked every link" means every distinct one.
    `known` are links already numbered for this campaign version (its own body's, when this is
    an A/B variant's): they keep their numbers and new ones follow, so one stored list serves
    every variant's redirects.
    """
    spans = _Links(source).spans
    links: list[str] = list(known)
    index: dict[str, int] = {url: i for i, url in enumerate(known)}
    out, last = [], 0
    for start, end, url in spans:
        if url not in index:
            index[url] = len(links)
            links.append(url)
        out.append(source[last:start])
        out.append(CLICK_HREF % index[url])
        last = end
    out.append(source[last:])
    return "".join(out), tuple(links)


def add_pixel(source: str) -> str:
    """The open pixel at the very end of the body (after the footer), or at the end of the document."""
    lower = source.lower()
    at = lower.rfind("</body")
    if at < 0:
        return source + PIXEL_HTML
    return source[:at] + PIXEL_HTML + source[at:]
