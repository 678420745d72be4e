"""The OSDI API under load, through gunicorn, on PostgreSQL with 1,000,000 people.

1. GET /api/v1/people?filter=modified_date gt '...' paging through the people (per_page 25) by
   following `next`, as a sync does: every page's server time (the app's own Server-Timing
   header) with median, p95 and max, target under 50 ms each; a run from page 1, and a run that
   starts cold at a deep page (its first page falls back to OFFSET, the rest seek).
   One `crm worker` runs beside gunicorn, as in production; the walks start once its periodic
   task has built the API's rank index (api/queries.py). Then the first page of another
   filter and a cold deep page of it.
2. record_signature_helper throughput (POST /api/v1/petitions/ID/signatures, a new person each
   time) against GET /healthz in the same run, both through gunicorn with the same clients.

The database BENCH_API_DATABASE_URL (default .../bench_api) is made afresh and dropped after
(BENCH_API_KEEP=1 keeps it, and BENCH_API_REUSE=1 runs on a kept one as it is); people are
generated in PostgreSQL itself (INSERT ... SELECT over generate_series: no rows cross the
wire), then VACUUM ANALYZE. Redis BENCH_API_REDIS_URL
(default db 10; each bench has its own) is flushed.

    python -m bench api
    BENCH_API_PEOPLE=200000 BENCH_API_PAGES=400 python -m bench api     # smaller
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_api"
DEFAULT_REDIS = "redis://127.0.0.1:6379/10"
ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 50.0
SLUG = "bench-api"


@dataclass
class Settings:
    database_url: str = DEFAULT_URL
    redis_url: str = DEFAULT_REDIS
    people: int = 1_000_000
    pages: int = 1_000  # consecutive pages walked from page 1 (and again from deep_page)
    deep_page: int = 30_000
    seconds: float = 15.0  # each throughput phase
    warmup: float = 3.0
    clients: int = 8
    loaders: int = 2
    workers: int = 2
    worker_class: str = "gthread"
    threads: int = 4
    keep: bool = False
    reuse: bool = False  # a kept database with `people` supporters is used as it is (no generation)

    @classmethod
    def from_env(cls) -> Settings:
        from bench import settings_from_env

        return settings_from_env(cls(), "BENCH_API")


def prepare(settings: Settings) -> tuple[int, str, str]:
    """Fresh database with `people` supporters and an open petition; returns (petition id, token, since)."""
    import redis
    from flask_migrate import upgrade
    from sqlalchemy import text

    from api.keys import create_key
    from bench.pg import ensure_database, fresh_database
    from crm import create_app
    from crm.extensions import db
    from crm.models import Petition
    from crm.petitions import service

    reuse = settings.reuse and _people_in(settings) == settings.people
    if not reuse:
        fresh_database(settings.database_url)
    ensure_database(settings.database_url)
    redis.Redis.from_url(settings.redis_url).flushdb()
    instance = tempfile.mkdtemp(prefix="crm-bench-api-")
    app = create_app({"CRM_ENV": "testing", "SECRET_KEY": "bench", "DATABASE_URL": settings.database_url,
                      "REDIS_URL": settings.redis_url, "INSTANCE_PATH": instance})
    with app.app_context():
        if not reuse:
            upgrade()
            # One statement in PostgreSQL: modified dates a second apart, a year ago onwards.
            db.session.execute(text(
                """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
                       custom_fields, notes, created_at, updated_at)
                   SELECT 'person' || g || '@example.net', 'Given' || g, 'Family', 'N1 9GU', 'GB', 'subscribed',
                          'bench', '{}', '', now() - interval '400 days' + g * interval '1 second',
                          now() - interval '400 days' + g * interval '1 second'
                   FROM generate_series(1, :n) g"""), {"n": settings.people})
            petition = service.save_petition({
                "slug": SLUG, "title": "Bench petition", "body": "Sign it.", "addressed_to": "Everyone",
                "goal": 1_000_000, "thank_you_message": "", "redirect_url": "",
                "consent_wording": "Updates from us; unsubscribe any time.", "consent_mode": "implied"})
            service.change_status(petition, "publish")
        petition = db.session.scalar(db.select(Petition).where(Petition.slug == SLUG))
        _, token = create_key(f"Bench {time.time():.0f}", "read_write", None)
        from outbound.dispatch import store_wanted

        store_wanted()  # no webhook endpoints: what the first dispatch job of a running worker records
        petition_id = petition.id
        db.session.remove()
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            since = conn.execute(text("SELECT min(updated_at) - interval '1 day' FROM supporter")).scalar()
        db.engine.dispose()
    return petition_id, token, since.isoformat()


def _people_in(settings: Settings) -> int:
    import psycopg

    try:
        with psycopg.connect(settings.database_url) as conn:
            return conn.execute("SELECT count(*) FROM supporter WHERE email LIKE 'person%'").fetchone()[0]
    except psycopg.Error:
        return 0


def explain(settings: Settings, since: str) -> str:
    """EXPLAIN ANALYZE of a deep keyset page, as api/queries.py issues it (for its planner note)."""
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT updated_at, id FROM supporter ORDER BY updated_at, id OFFSET %s LIMIT 1",
                           (settings.people // 2,)).fetchone()
        plan = conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM supporter WHERE erased_at IS NULL AND updated_at > %s "
            "AND (updated_at, id) > (%s, %s) ORDER BY updated_at, id LIMIT 25", (since, row[0], row[1])).fetchall()
    return " / ".join(line[0].strip() for line in plan)


def _wait_for_ranks(settings: Settings, seconds: float = 120.0) -> bool:
    """Wait until the worker has built the API's rank index (it is queued by the first page of a filter)."""
    import redis

    from api.queries import RANKS_KEY

    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.exists(f"{RANKS_KEY}:built"):
            return True
        time.sleep(0.5)
    return False


def _server_ms(response: http.client.HTTPResponse) -> float:
    timing = response.headers.get("Server-Timing", "")
    return float(timing.partition("dur=")[2] or "nan")


def walk(port: int, token: str, since: str, start_page: int, pages: int) -> tuple[list[float], list[float]]:
    """Follow `next` from `start_page` for `pages` pages; (server ms, client ms) per page."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    flt = quote(f"modified_date gt '{since}'")
    path = f"/api/v1/people?per_page=25&page={start_page}&filter={flt}"
    server, client = [], []
    for _ in range(pages):
        started = time.perf_counter()
        conn.request("GET", path, headers={"OSDI-API-Token": token})
        response = conn.getresponse()
        body = json.loads(response.read())
        client.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body}")
        server.append(_server_ms(response))
        href = body["_links"].get("next", {}).get("href")
        if not href:
            break
        path = href[href.index("/api/"):]
    conn.close()
    return server, client


def load(spec: dict) -> dict:
    """One load process: `clients` threads of GET /healthz or the signature helper; counts in the window."""
    start = spec["start_at"] - time.time() + time.perf_counter()
    window = (start + spec["warmup"], start + spec["warmup"] + spec["seconds"])
    done, errors, statuses = [0] * spec["clients"], [0] * spec["clients"], {}
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
        n = 0
        while time.perf_counter() < window[1]:
            n += 1
            if spec["phase"] == "hello":
                method, path, body, headers = "GET", "/healthz", None, {}
            else:
                email = f"helper-{spec['run']}-{spec['loader']}-{i}-{n}@example.net"
                method, path = "POST", f"/api/v1/petitions/{spec['petition_id']}/signatures"
                body = json.dumps({"person": {"given_name": "Bench", "email_addresses": [
                    {"address": email, "status": "subscribed"}]}})
                headers = {"OSDI-API-Token": spec["token"], "Content-Type": "application/json"}
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                errors[i] += 1
                continue
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
            if window[0] <= time.perf_counter() <= window[1] and response.status in (200, 201):
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(spec["clients"])]
    time.sleep(max(0.0, start - time.perf_counter()))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"done": sum(done), "errors": sum(errors), "statuses": statuses}


def throughput(phase: str, settings: Settings, port: int, token: str, petition_id: int) -> dict:
    from bench import collect_json

    start_at = time.time() + 1.5
    share = [settings.clients // settings.loaders + (i < settings.clients % settings.loaders)
             for i in range(settings.loaders)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "bench.bench_api", "--load", json.dumps({
            "phase": phase, "port": port, "clients": n, "loader": i, "start_at": start_at, "warmup": settings.warmup,
            "seconds": settings.seconds, "token": token, "petition_id": petition_id, "run": int(start_at)})],
        cwd=ROOT, stdout=subprocess.PIPE, text=True) for i, n in enumerate(share) if n]
    outs = collect_json(procs, phase)
    statuses: dict = {}
    for out in outs:
        for code, count in out["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {"rate": sum(o["done"] for o in outs) / settings.seconds, "errors": sum(o["errors"] for o in outs),
            "statuses": statuses}


def _figures(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(0.95 * len(ordered)) - 1)], ordered[-1]


def run(settings: Settings | None = None) -> list[dict]:
    settings = settings or Settings.from_env()
    from bench.bench_signing import Gunicorn

    started = time.perf_counter()
    petition_id, token, since = prepare(settings)
    generated = time.perf_counter() - started
    plan = explain(settings, since)
    env = {**os.environ, "CRM_ENV": "production", "SECRET_KEY": "bench-api-not-a-secret",
           "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "API_RATE_LIMIT": "100000000/minute"}
    env.pop("SMTP_URL", None)
    server = Gunicorn(settings, env)
    # One `crm worker`, as in production: it builds the API's rank index (api/queries.py) the
    # first page of a filter asks for, and recounts stale totals.
    # Its periodic task builds the index when it starts; the walks begin once it is there.
    worker_started = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "crm.cli", "worker", "--no-scheduler"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        indexed_first = _wait_for_ranks(settings)
        index_seconds = time.perf_counter() - worker_started
        first_server, first_client = walk(server.port, token, since, 1, settings.pages)
        deep_server, deep_client = walk(server.port, token, since, settings.deep_page, settings.pages)
        # Another filter: its first page's count and a cold deep page of it.
        indexed = _wait_for_ranks(settings)
        other = (datetime.fromisoformat(since) + timedelta(days=100)).isoformat()
        other_first, _ = walk(server.port, token, other, 1, 2)
        other_deep, _ = walk(server.port, token, other, settings.deep_page // 2, 2)
        hello = throughput("hello", settings, server.port, token, petition_id)
        helper = throughput("helper", settings, server.port, token, petition_id)
        problems = server.problems()
    finally:
        worker.terminate()
        worker.wait(60)
        server.stop()
    if not settings.keep:
        from bench.pg import drop_database

        drop_database(settings.database_url)
    rows = [{"case": "data", "value": f"{settings.people:,}", "unit": "people",
             "notes": f"ready in {generated:.0f} s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
                      f"deep keyset page plan: {plan[:160]}"}]
    for name, server_ms, client_ms in (("pages from 1", first_server, first_client),
                                       (f"pages from {settings.deep_page:,}", deep_server, deep_client)):
        # The first page asked of a filter counts every match (total_records, then cached), and a
        # page asked cold finds its first key by OFFSET; the pages after it seek from the last.
        median, p95, worst = _figures(server_ms[1:])
        slowest = sorted(range(1, len(server_ms)), key=lambda i: -server_ms[i])[:3]
        where = ", ".join(f"#{i + 1} {server_ms[i]:.0f} ms" for i in slowest)
        rows.append({"case": f"GET people, {name}", "value": f"{median:.1f}", "unit": "ms median (server)",
                     "notes": f"following pages: p95 {p95:.1f} ms, max {worst:.1f} ms over {len(server_ms) - 1:,} "
                              f"pages (target each < {TARGET_MS:.0f} ms: {'met' if worst < TARGET_MS else 'NOT met'}); "
                              f"first page {server_ms[0]:.0f} ms; slowest {where}; client median "
                              f"{statistics.median(client_ms):.1f} ms"})
    rows.append({"case": "GET people, another filter", "value": f"{other_first[0]:.1f}",
                 "unit": "ms first page (server)",
                 "notes": f"rank index {'built' if indexed and indexed_first else 'NOT built'} by the worker "
                          f"({index_seconds:.1f} s after it started); its page "
                          f"{settings.deep_page // 2:,} asked cold: {other_deep[0]:.1f} ms "
                          f"(target each < {TARGET_MS:.0f} ms)"})
    ratio = helper["rate"] / hello["rate"] if hello["rate"] else 0.0
    rows.append({"case": "GET /healthz", "value": f"{hello['rate']:.0f}", "unit": "requests/s",
                 "notes": f"{settings.clients} clients, {settings.workers} gunicorn workers x {settings.threads} "
                          f"threads; statuses {hello['statuses']}"})
    rows.append({"case": "record_signature_helper", "value": f"{helper['rate']:.0f}", "unit": "signatures/s",
                 "notes": f"{ratio:.2f} of /healthz; statuses {helper['statuses']}, transport errors "
                          f"{helper['errors']}, server log problems {problems}"})
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["--load"]:
        print(json.dumps(load(json.loads(argv[1]))))
        return 0
    from bench.__main__ import print_table

    print_table([{"benchmark": "api", **row} for row in run()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
