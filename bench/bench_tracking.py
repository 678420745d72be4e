"""Open and click tracking under load, through gunicorn, beside GET /healthz of the same app; then the flush.

One run:
1. PostgreSQL database BENCH_TRACKING_DATABASE_URL (default .../bench_tracking, never `test`):
   schema dropped and migrated afresh; one sent campaign with tracking on, three links, and
   BENCH_TRACKING_MESSAGES messages (default 5,000), delivered a day ago (so no open is taken
   for an image proxy's prefetch on arrival). Redis BENCH_TRACKING_REDIS_URL (default db 12) is
   flushed.
2. gunicorn serves crm.wsgi:app with 2 workers (gthread x 4), CRM_ENV=production.
3. Load processes (keep-alive http.client connections, a desktop browser's User-Agent) run
   three phases of warm-up + fixed duration: GET /healthz; GET /o/<token> (the pixel, tokens
   cycling over every message); GET /c/<token>/<i> (the redirect, links cycling). Only
   requests completing inside the window count towards rates and percentiles; every 200 GIF
   and 302 (warm-up included) is counted as a hit that must be recorded.
4. The flush (tracking.flush, as the workers run it) writes what the server recorded; then
   every hit is looked for in engagement_event (the count per kind and message equals the
   client's), none lost or doubled, and each message's opened_at lies between the start of the
   earliest pixel request for it and the earliest end of any of them.
5. BENCH_TRACKING_FLUSH_EVENTS hits (default 1,000,000; opens and clicks over the messages) are
   put in the stream 100,000 at a time and flushed; the flush's time alone gives rows/s.

    python -m bench tracking
    python -m bench.bench_tracking --seconds 10 --flush-events 200000   # flags override BENCH_TRACKING_*
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import settings_arguments, settings_from_args
from bench.bench_signing import Gunicorn, percentile

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_tracking"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-tracking-not-a-secret"
HELLO_PATH = "/healthz"
PHASES = ("hello", "pixel", "click")
TARGETS = {"pixel": 0.5, "click": 0.4}
TARGET_P99_MS = 50.0
LINKS = ("https://example.org/report", "https://example.org/donate", "https://example.org/act?ref=mail")
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
CHUNK = 100_000


@dataclass
class Settings:
    database_url: str = DEFAULT_URL
    redis_url: str = DEFAULT_REDIS
    seconds: float = 15.0
    warmup: float = 3.0
    clients: int = 8
    loaders: int = 2
    workers: int = 2
    worker_class: str = "gthread"
    threads: int = 4
    messages: int = 5_000
    flush_events: int = 1_000_000

    @classmethod
    def from_env(cls) -> Settings:
        from bench import settings_from_env

        return settings_from_env(cls(), "BENCH_TRACKING")


# ---- the load process --------------------------------------------------------------------------

def _loop(port: int, window: tuple[float, float], phase: str, tokens: list[list], offset: int, step: int,
          out: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"User-Agent": AGENT, "Accept": "image/*" if phase == "pixel" else "text/html"}
    n = offset
    while time.perf_counter() < window[1]:
        message_id, token = tokens[n % len(tokens)]
        link = (n // len(tokens)) % len(LINKS)
        path = {"hello": HELLO_PATH, "pixel": f"/o/{token}", "click": f"/c/{token}/{link}"}[phase]
        n += step
        started_wall, started = time.time(), time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            out["errors"][type(exc).__name__] += 1
            if phase != "hello":
                out["uncertain"] += 1
            continue
        done, done_wall = time.perf_counter(), time.time()
        out["statuses"][resp.status] += 1
        if window[0] <= done <= window[1]:
            out["latencies"].append(done - started)
        ok = (phase == "pixel" and resp.status == 200) or (phase == "click" and resp.status == 302
                                                           and resp.getheader("Location") == LINKS[link])
        if phase != "hello" and ok:
            key = str(message_id)
            out["hits"][key] = out["hits"].get(key, 0) + 1
            if phase == "pixel":
                first = out["first"].get(key)
                out["first"][key] = [min(first[0], started_wall), min(first[1], done_wall)] if first else \
                    [started_wall, done_wall]
        elif phase != "hello":
            out["errors"][f"unexpected {resp.status}"] += 1


def load(spec: dict) -> dict:
    """Run `spec["clients"]` threads of one phase; return what they saw."""
    tokens = json.loads(Path(spec["tokens"]).read_text())
    start = spec["start_at"] - time.time() + time.perf_counter()
    window = (start + spec["warmup"], start + spec["warmup"] + spec["seconds"])
    outs = [{"latencies": [], "statuses": Counter(), "errors": Counter(), "hits": {}, "first": {}, "uncertain": 0}
            for _ in range(spec["clients"])]
    step = spec["clients"] * spec["loaders"]
    threads = [threading.Thread(target=_loop, daemon=True, args=(
        spec["port"], window, spec["phase"], tokens, spec["loader"] * spec["clients"] + i, step, out))
        for i, out in enumerate(outs)]
    time.sleep(max(0.0, start - time.perf_counter()))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = {"latencies": [], "statuses": Counter(), "errors": Counter(), "hits": Counter(), "first": {},
              "uncertain": 0}
    for out in outs:
        merged["latencies"].extend(out["latencies"])
        merged["statuses"].update(out["statuses"])
        merged["errors"].update(out["errors"])
        merged["hits"].update(out["hits"])
        merged["uncertain"] += out["uncertain"]
        _merge_first(merged["first"], out["first"])
    return {**merged, "statuses": {str(k): v for k, v in merged["statuses"].items()}}


def _merge_first(into: dict, other: dict) -> None:
    for key, (start, end) in other.items():
        have = into.get(key)
        into[key] = [min(have[0], start), min(have[1], end)] if have else [start, end]


# ---- the parent --------------------------------------------------------------------------------

def _app(settings: Settings, instance: str):
    from crm import create_app

    return create_app({"CRM_ENV": "testing", "SECRET_KEY": SECRET, "DATABASE_URL": settings.database_url,
                       "REDIS_URL": settings.redis_url, "INSTANCE_PATH": instance})


def prepare(settings: Settings, app) -> tuple[int, list[list]]:
    """Fresh schema, one tracked sent campaign with its links and messages; (campaign id, [[message, token]])."""
    import redis
    from flask_migrate import upgrade
    from sqlalchemy import text

    from bench.pg import ensure_database
    from crm.extensions import db
    from tracking.tokens import make_tracking_token

    ensure_database(settings.database_url)
    redis.Redis.from_url(settings.redis_url).flushdb()
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        campaign_id = db.session.execute(text(
            """INSERT INTO campaign (name, subject, preheader, reply_to, mjml, text_body, track_opens, track_clicks,
                   status, version, status_reason, total, sent_count, failed_count, unknown_count, suppressed_count,
                   created_at, updated_at)
               VALUES ('Bench', 'Bench', '', '', '', '', true, true, 'sent', 1, '', :n, :n, 0, 0, 0, now(), now())
               RETURNING id"""), {"n": settings.messages}).scalar_one()
        for position, url in enumerate(LINKS):
            db.session.execute(text("INSERT INTO campaign_link (campaign_id, version, position, url) "
                                    "VALUES (:c, 1, :p, :u)"), {"c": campaign_id, "p": position, "u": url})
        db.session.execute(text(
            """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
                   custom_fields, notes, created_at, updated_at)
               SELECT 'reader' || g || '@example.net', 'Reader', '', '', '', 'subscribed', 'bench', '{}', '',
                      now(), now() FROM generate_series(1, :n) g"""), {"n": settings.messages})
        db.session.execute(text(
            """INSERT INTO message (campaign_id, supporter_id, email, status, attempts, error, created_at, sent_at)
               SELECT :c, id, email, 'sent', 1, '', now() - interval '1 day', now() - interval '1 day'
               FROM supporter ORDER BY id"""), {"c": campaign_id})
        db.session.commit()
        ids = db.session.scalars(text("SELECT id FROM message ORDER BY id")).all()
        tokens = [[mid, make_tracking_token(mid, campaign_id, 1)] for mid in ids]
        db.session.remove()
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return campaign_id, tokens


def run_phase(phase: str, settings: Settings, server: Gunicorn, tokens_file: str) -> dict:
    from bench import collect_json

    start_at = time.time() + 1.5
    share = [settings.clients // settings.loaders + (i < settings.clients % settings.loaders)
             for i in range(settings.loaders)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "bench.bench_tracking", "--load", json.dumps({
            "phase": phase, "port": server.port, "clients": n, "loader": i, "loaders": settings.loaders,
            "start_at": start_at, "warmup": settings.warmup, "seconds": settings.seconds, "tokens": tokens_file})],
        cwd=ROOT, stdout=subprocess.PIPE, text=True) for i, n in enumerate(share) if n]
    merged = {"latencies": [], "statuses": Counter(), "errors": Counter(), "hits": Counter(), "first": {},
              "uncertain": 0}
    for out in collect_json(procs, phase):
        merged["latencies"].extend(out["latencies"])
        merged["statuses"].update(out["statuses"])
        merged["errors"].update(out["errors"])
        merged["hits"].update(out["hits"])
        merged["uncertain"] += out["uncertain"]
        _merge_first(merged["first"], out["first"])
    return merged


def check(app, campaign_id: int, results: dict) -> dict:
    """Flush, then compare the database with what the clients saw."""
    from sqlalchemy import text

    from crm.extensions import db
    from crm.redis_conn import get_redis
    from tracking.flush import flush
    from tracking.record import GROUP, STREAM

    with app.app_context():
        started = time.perf_counter()
        flushed = flush()
        flush_seconds = time.perf_counter() - started
        redis = get_redis()
        pending = redis.xpending(STREAM, GROUP)["pending"]
        left = redis.xlen(STREAM)
        rows = {(kind, str(mid)): n for kind, mid, n in db.session.execute(text(
            "SELECT kind, message_id, count(*) FROM engagement_event WHERE campaign_id = :c GROUP BY kind, message_id"),
            {"c": campaign_id})}
        machine = db.session.scalar(text("SELECT count(*) FROM engagement_event WHERE is_machine"))
        opened = {str(mid): at.timestamp() for mid, at in db.session.execute(text(
            "SELECT id, opened_at FROM message WHERE campaign_id = :c AND opened_at IS NOT NULL"), {"c": campaign_id})}
        db.session.remove()
    lost = doubled = 0
    for kind, phase in (("open", "pixel"), ("click", "click")):
        for mid, n in results[phase]["hits"].items():
            have = rows.get((kind, mid), 0)
            lost += max(0, n - have)
            doubled += max(0, have - n)
        # Rows for messages no client saw answered: recorded but not counted (a request lost in transit).
        doubled += sum(n for (k, mid), n in rows.items() if k == kind and mid not in results[phase]["hits"])
    first = results["pixel"]["first"]
    wrong_first = sum(1 for mid, (start, end) in first.items()
                      if mid not in opened or not (start - 0.002 <= opened[mid] <= end + 0.002))
    wrong_first += sum(1 for mid in opened if mid not in first)
    return {"flushed": flushed, "flush_seconds": flush_seconds, "pending": pending, "left": left, "lost": lost,
            "doubled": doubled, "machine": machine, "wrong_first": wrong_first, "first_checked": len(first)}


def bulk_flush(app, campaign_id: int, tokens: list[list], total: int) -> tuple[int, float]:
    """`total` hits put in the stream CHUNK at a time, each chunk flushed; (rows written, flush seconds)."""
    from crm.redis_conn import get_redis
    from tracking.flush import flush
    from tracking.record import STREAM

    written, seconds = 0, 0.0
    with app.app_context():
        redis = get_redis()
        now_ms = int(time.time() * 1000)
        n = 0
        while n < total:
            pipe = redis.pipeline(transaction=False)
            for i in range(n, min(total, n + CHUNK)):
                mid = tokens[i % len(tokens)][0]
                fields = {"k": "open", "m": mid, "c": campaign_id, "v": 1, "t": now_ms + i, "a": ""}
                if i % 4 == 3:
                    fields.update(k="click", i=(i // 4) % len(LINKS))
                pipe.xadd(STREAM, fields)
            pipe.execute()
            n = min(total, n + CHUNK)
            started = time.perf_counter()
            written += flush().written
            seconds += time.perf_counter() - started
    return written, seconds


def run(settings: Settings | None = None) -> list[dict]:
    settings = settings or Settings.from_env()
    try:
        return _run(settings)
    except RuntimeError as exc:
        return [{"case": "failed", "value": "", "unit": "", "notes": str(exc)[:300]}]


def _run(settings: Settings) -> list[dict]:
    from bench.pg import release

    instance = tempfile.mkdtemp(prefix="crm-bench-tracking-")
    app = _app(settings, instance)
    campaign_id, tokens = prepare(settings, app)
    tokens_file = Path(instance) / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    env = {**os.environ, "CRM_ENV": "production", "SECRET_KEY": SECRET, "DATABASE_URL": settings.database_url,
           "REDIS_URL": settings.redis_url}
    env.pop("SMTP_URL", None)
    server = Gunicorn(settings, env)
    try:
        results = {phase: run_phase(phase, settings, server, str(tokens_file)) for phase in PHASES}
        log_problems = server.problems()
    finally:
        server.stop()
    counted = check(app, campaign_id, results)
    bulk_rows, bulk_seconds = bulk_flush(app, campaign_id, tokens, settings.flush_events)
    release(app, settings.database_url, instance, keep=False)

    rates = {phase: len(results[phase]["latencies"]) / settings.seconds for phase in PHASES}
    ratios = {phase: rates[phase] / rates["hello"] if rates["hello"] else 0.0 for phase in TARGETS}
    p99 = {phase: percentile(results[phase]["latencies"], 0.99) for phase in PHASES}
    hits = {phase: sum(results[phase]["hits"].values()) for phase in ("pixel", "click")}
    errors = sum((results[p]["errors"] for p in PHASES), Counter())
    met = (all(ratios[p] >= TARGETS[p] for p in TARGETS) and max(p99["pixel"], p99["click"]) < TARGET_P99_MS
           and counted["lost"] == counted["doubled"] == counted["wrong_first"] == 0)
    desc = f"{settings.workers} {settings.worker_class} workers x {settings.threads} threads; " \
           f"{settings.clients} clients in {settings.loaders} load processes, {settings.warmup:g}s warm-up + " \
           f"{settings.seconds:g}s measured"

    def target(phase: str) -> str:
        return f"target {TARGETS[phase]:.1f} or more: {'met' if ratios[phase] >= TARGETS[phase] else 'NOT met'}"

    def p99_note(phase: str) -> str:
        ok = p99[phase] < TARGET_P99_MS
        return f"target < {TARGET_P99_MS:.0f} ms: {'met' if ok else 'NOT met'}; p50 " \
               f"{percentile(results[phase]['latencies'], 0.5):.1f} ms"

    return [
        {"case": "hello world", "value": f"{rates['hello']:,.0f}", "unit": "req/s", "notes": f"GET /healthz; {desc}"},
        {"case": "hello world latency p99", "value": f"{p99['hello']:.1f}", "unit": "ms", "notes": ""},
        {"case": "pixel GET /o/<token>", "value": f"{rates['pixel']:,.0f}", "unit": "req/s",
         "notes": f"{settings.messages:,} messages' tokens in turn; one XADD per hit"},
        {"case": "pixel latency p99", "value": f"{p99['pixel']:.1f}", "unit": "ms", "notes": p99_note("pixel")},
        {"case": "ratio pixel / hello", "value": f"{ratios['pixel']:.2f}", "unit": "", "notes": target("pixel")},
        {"case": "redirect GET /c/<token>/<i>", "value": f"{rates['click']:,.0f}", "unit": "req/s",
         "notes": "302 to the stored link (per-process cache of the link list)"},
        {"case": "redirect latency p99", "value": f"{p99['click']:.1f}", "unit": "ms", "notes": p99_note("click")},
        {"case": "ratio redirect / hello", "value": f"{ratios['click']:.2f}", "unit": "", "notes": target("click")},
        {"case": "hits answered", "value": f"{hits['pixel'] + hits['click']:,}", "unit": "hits",
         "notes": f"opens {hits['pixel']:,}, clicks {hits['click']:,} (warm-up included); client errors: "
                  f"{dict(errors) or 'none'}; {log_problems} error lines in gunicorn's log"},
        {"case": "flush after the load", "value": f"{counted['flushed'].written:,}", "unit": "rows",
         "notes": f"{counted['flush_seconds']:.2f} s; {counted['machine']} flagged machine; "
                  f"{counted['pending']} pending and {counted['left']} left in the stream after"},
        {"case": "lost / doubled", "value": f"{counted['lost']} / {counted['doubled']}", "unit": "",
         "notes": "per kind and message, database against the client's answered hits"},
        {"case": "first-open times wrong", "value": f"{counted['wrong_first']}", "unit": "",
         "notes": f"of {counted['first_checked']:,} opened messages: opened_at within the earliest request"},
        {"case": "bulk flush", "value": f"{bulk_rows / bulk_seconds if bulk_seconds else 0:,.0f}", "unit": "rows/s",
         "notes": f"{bulk_rows:,} events into engagement_event in {bulk_seconds:.1f} s of flush time "
                  f"({CHUNK:,} per stream fill; 3 opens : 1 click over {settings.messages:,} messages)"},
        {"case": "all targets", "value": "met" if met else "NOT met", "unit": "",
         "notes": "2 cores shared by gunicorn, PostgreSQL, Redis, the load and other work on the machine"},
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tracking", description=__doc__.split("\n")[0])
    parser.add_argument("--load", help=argparse.SUPPRESS)
    defaults = Settings.from_env()
    settings_arguments(parser, defaults, "BENCH_TRACKING")
    args = parser.parse_args(argv)
    if args.load:
        print(json.dumps(load(json.loads(args.load))))
        return 0
    from bench.__main__ import print_table

    settings = settings_from_args(args, defaults)
    print_table([{"benchmark": "tracking", **row} for row in run(settings)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
