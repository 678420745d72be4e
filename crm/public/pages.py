"""Public petition pages rendered once and reused for a moment, per web process.

A view of /p/<slug> used to cost a database round trip (petition and wording), a Redis
round trip (the count), building a WTForms form and rendering three templates, about 2 ms of
CPU, for a page that is the same for every visitor. Here each process keeps, per petition
(and per scheme and host: the pages carry absolute links):

- the petition snapshot, read from the database at most once per lifetime;
- the count shown, read through the Redis cache once per lifetime and replaced by the
  count signature_added() returns whenever this process records a signature;
- the rendered sign page, embed page and thank-you page as Fragments: the HTML with named
  holes (the count, the progress bar's width), filled in per request by a string join.

The lifetime is PUBLIC_PAGE_CACHE_SECONDS (default 1 s), never longer than
SIGNATURE_COUNT_CACHE_SECONDS; the pages tell caches in front of the app (a CDN, nginx) the
same, `Cache-Control: public, max-age=<lifetime>` (crm.public.views). An edit, publish or
close in this process drops the petition's entries at once (service.petition_changed); other
processes follow within the lifetime. Nothing a signature depends on is trusted from here: the sign statement checks
in the database that the petition is open and reads the wording version the form showed
(crm.petitions.queries), and every other path reads the petition afresh.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from crm.petitions.service import PublicPetition

MAX_ENTRIES = 256  # (slug, origin) pairs; a crowd of made-up Host headers just empties the cache


class Fragments:
    """HTML rendered once with slot() markers in it, filled per request with safe strings."""

    __slots__ = ("_parts",)

    _marker = secrets.token_hex(8)  # per process: text on a page cannot imitate a slot
    _slot_re = re.compile("\x00" + _marker + r":(\w+)\x00")

    def __init__(self, html: str):
        self._parts = self._slot_re.split(html)  # literal, name, literal, name, ..., literal

    @classmethod
    def slot(cls, name: str) -> str:
        """The marker to render where `name` goes; markupsafe leaves it alone (no & < > ' ")."""
        return f"\x00{cls._marker}:{name}\x00"

    def fill(self, values: dict[str, str]) -> str:
        """The page with each slot replaced by values[name], which must already be HTML-safe."""
        parts = self._parts
        return "".join([parts[i] if i % 2 == 0 else values[parts[i]] for i in range(len(parts))])


@dataclass(slots=True)
class Entry:
    """What one process knows about one public petition for the current lifetime."""

    petition: PublicPetition
    expires: float
    count: int | None = None
    sign_page: Fragments | None = None
    embed_page: Fragments | None = None
    thanks_page: Fragments | None = None
    # The last page served whole, as bytes: (embed?, count) -> body. Every visitor gets the same
    # page until the count moves, so most views are this lookup.
    served: tuple[tuple[bool, int], bytes] | None = None


class PageCache:
    """Entries by (slug, origin), each alive for the configured lifetime; safe to share between threads."""

    def __init__(self):
        self._entries: dict[tuple[str, str], Entry] = {}
        self._lock = threading.Lock()

    def get(self, slug: str, origin: str, load: Callable[[str], PublicPetition | None],
            lifetime: float) -> Entry | None:
        """The live entry for `slug`, or a new one from `load(slug)`; None when that finds nothing."""
        now = time.monotonic()
        entry = self._entries.get((slug, origin))
        if entry is not None and entry.expires > now:
            return entry
        petition = load(slug)
        if petition is None:
            with self._lock:  # forget() may be walking the keys in another thread
                self._entries.pop((slug, origin), None)
            return None
        entry = Entry(petition=petition, expires=now + lifetime)
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[(slug, origin)] = entry
        return entry

    def forget(self, slug: str | None = None) -> None:
        """Drop the entries of `slug` (all of them when None)."""
        with self._lock:
            if slug is None:
                self._entries.clear()
            else:
                for key in [k for k in self._entries if k[0] == slug]:
                    del self._entries[key]


def cache() -> PageCache:
    """This app's page cache (one per app and process)."""
    ext = current_app.extensions
    found = ext.get("public_pages")
    if found is None:
        found = ext.setdefault("public_pages", PageCache())
    return found


def lifetime() -> float:
    cfg = current_app.config
    return min(cfg["PUBLIC_PAGE_CACHE_SECONDS"], cfg["SIGNATURE_COUNT_CACHE_SECONDS"])
