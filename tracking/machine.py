"""Which opens and clicks a machine made: image proxies and link scanners. Flagged, never dropped.

Two kinds of evidence, both documented by the parties involved:

- the user agent. Image proxies fetch the pixel on the reader's behalf, some (Apple Mail Privacy
  Protection) whether or not anyone reads the message; link scanners (Microsoft Defender Safe
  Links, Proofpoint, Mimecast, Barracuda and the like) fetch every link before delivery or before
  the reader's click goes through. The lists below are the agents they publish or that their
  users' documentation quotes, matched as substrings, case-insensitively;
- timing, for the ones that hide behind a browser's agent: a burst of opens each within seconds
  of its message's delivery, for many messages at once, is a proxy prefetching on arrival (Apple
  MPP's documented behaviour); a click on every link of a message within a few seconds is a
  scanner (no reader does that).

An event found to be a machine's keeps its row in engagement_event with is_machine set, and does
not set the message's first-open or first-click time: reports count people and all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

PROXY = "proxy"
SCANNER = "scanner"

# Image proxies: they fetch images when the message arrives or is displayed.
PROXY_AGENTS = (
    # Gmail: "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    "googleimageproxy",
    "ggpht.com",
    "yahoomailproxy",  # Yahoo Mail: "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
    "yahoo! slurp",
    "apple mail privacy",
    "mail privacy protection",
)
# Apple MPP fetches through Apple's proxies with a generic WebKit agent and no browser version:
# "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)".
APPLE_MPP_AGENT = "mozilla/5.0 (macintosh; intel mac os x 10_15_7) applewebkit/605.1.15 (khtml, like gecko)"
# Link scanners and the HTTP libraries and headless browsers such checks are built on.
SCANNER_AGENTS = (
    "safelinks",  # Microsoft Defender for Office 365 Safe Links
    "microsoft office existence discovery",
    "ms-office",
    "proofpoint",
    "urldefense",
    "mimecast",
    "barracuda",
    "symantec",
    "messagelabs",
    "trendmicro",
    "forcepoint",
    "sophos",
    "fortiguard",
    "cisco ironport",
    "zscaler",
    "bitdefender",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "curl/",
    "wget/",
    "java/",
    "okhttp",
    "libwww-perl",
    "scrapy",
    "bot",
    "crawler",
    "spider",
    "preview",
)

# How close to delivery an open must be, and how many messages at once, to be a prefetch burst.
PREFETCH_SECONDS = 10
PREFETCH_MIN_MESSAGES = 3
# Clicks on every link of a message within this window are a scanner's.
SCAN_SECONDS = 5


@lru_cache(maxsize=4096)  # the pixel asks for every hit, and a few agents make most of them
def classify_agent(user_agent: str | None) -> str:
    """PROXY, SCANNER or "" (a browser or mail client, as far as the agent says)."""
    agent = (user_agent or "").strip().lower()
    if not agent:
        return SCANNER  # browsers and mail clients always send one; scripts and checkers often do not
    if any(marker in agent for marker in PROXY_AGENTS) or agent == APPLE_MPP_AGENT:
        return PROXY
    if any(marker in agent for marker in SCANNER_AGENTS):
        return SCANNER
    return ""


@dataclass
class Hit:
    """One recorded open or click, as the flush reads it from the stream, or an earlier one it
    reads back (`stored`) because the timing rules need it beside the new ones."""

    key: str
    kind: str  # open | click
    message_id: int
    campaign_id: int
    version: int
    link_index: int | None
    at: datetime
    agent_class: str
    is_machine: bool = False
    stored: bool = False  # already in engagement_event, written by an earlier batch


def near_delivery(hit: Hit, sent_at: dict[int, datetime | None]) -> bool:
    """An open within PREFETCH_SECONDS of its message's delivery: what a prefetching proxy does."""
    delivered = sent_at.get(hit.message_id)
    return (hit.kind == "open" and delivered is not None
            and timedelta(0) <= hit.at - delivered <= timedelta(seconds=PREFETCH_SECONDS))


def flag_machines(hits: Iterable[Hit], sent_at: dict[int, datetime | None],
                  link_counts: dict[tuple[int, int], int], bursts: set[int] = frozenset()) -> list[Hit]:
    """Set is_machine on each hit a machine made; returns the hits.

    `sent_at` maps message ids to their delivery time, `link_counts` (campaign, version) to how
    many distinct links that version has, `bursts` holds the campaigns where a prefetch burst was
    already seen. The timing rules judge the hits given together, so the flush passes the new
    hits with the earlier ones that bear on them (`stored`): the same message's recent clicks,
    and the campaign's earlier opens at delivery. A burst spread over several batches, or over a
    slow send's hours, is judged whole; stored hits it turns into a machine's get is_machine set
    here and the flush writes that back.
    """
    hits = list(hits)
    prefetches: dict[int, list[Hit]] = defaultdict(list)
    clicks: dict[int, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.agent_class in (PROXY, SCANNER):
            hit.is_machine = True
        if near_delivery(hit, sent_at):
            prefetches[hit.campaign_id].append(hit)
        elif hit.kind == "click":
            clicks[hit.message_id].append(hit)
    for campaign_id, burst in prefetches.items():
        if campaign_id in bursts or len({h.message_id for h in burst}) >= PREFETCH_MIN_MESSAGES:
            for hit in burst:
                hit.is_machine = True
    for message_hits in clicks.values():
        first = message_hits[0]
        links = link_counts.get((first.campaign_id, first.version), 0)
        if links < 2:
            continue
        message_hits.sort(key=lambda h: h.at)
        # Any window of SCAN_SECONDS holding a click on every distinct link: all of them are the scanner's.
        for i, start in enumerate(message_hits):
            window = [h for h in message_hits[i:] if h.at - start.at <= timedelta(seconds=SCAN_SECONDS)]
            if len({h.link_index for h in window}) >= links:
                for hit in window:
                    hit.is_machine = True
    return hits
