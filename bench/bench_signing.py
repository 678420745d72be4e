"""Public signing under load, through gunicorn, beside a 'hello world' of the same app.

Three ratios against GET /healthz (a constant answer through the whole app: routing, the
access, input and cross-origin checks, the headers) in the same run, each a rate of
completed requests or signatures per second:
- the sign form GET alone (GET /p/<slug>), target 0.8 or more;
- the sign POST alone (POST /p/<slug>/sign, a new address each time), target 0.3 or more;
- the pair, as a browser signs: the form GET then its POST, target 0.25 or more;
plus the p99 of the sign POST under 250 ms, and no signature lost or duplicated (counted in
the database afterwards, over every signer the POST-alone and pair phases saw accepted).

One run:
1. PostgreSQL database BENCH_SIGNING_DATABASE_URL (default .../bench_signing, created if
   missing, never `test` or `bench`): schema dropped and migrated afresh (flask_migrate
   upgrade), one open petition with implied consent, already holding
   BENCH_SIGNING_EXISTING signatures (default 10,000, each by its own supporter; see
   Settings.existing for why not none). Its page and thank-you page show the count, which a
   COUNT would read in full: the public pages cache it in Redis for a few seconds.
   Redis BENCH_SIGNING_REDIS_URL (default db 13) is flushed.
2. gunicorn serves crm.wsgi:app with 2 workers,
   CRM_ENV=production. The per-IP limit (SIGN_RATE_LIMIT, default 20/10 minutes) would refuse
   a load generator that signs from one address, so it is raised through that setting only;
   the limiter still runs (one Redis call per POST), it just never refuses.
3. Load processes (separate interpreters, threads with keep-alive http.client connections)
   run four phases of warm-up + fixed duration: GET /healthz; GET /p/<slug>; POST
   /p/<slug>/sign (the wording version read from the page once, before the phase); then the
   GET + POST pair. The POSTs carry what a browser sends from the page (Sec-Fetch-Site:
   same-origin, Origin), no cookie and no token. Only requests completing inside the
   measured window count towards rates and latency percentiles. Any Set-Cookie from a
   public page is counted (there should be none).
4. Every signer the load processes saw accepted (200 "your signature has been added") is
   looked up: a signature, a supporter and an opt_in consent event each, exactly once.

    python -m bench signing
    python -m bench.bench_signing --seconds 10 --warmup 3      # flags override BENCH_SIGNING_*
    python -m bench.bench_signing --breakdown                  # a POST's CPU in process, part by part
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from bench import settings_arguments, settings_from_args

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_signing"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
ROOT = Path(__file__).resolve().parents[1]
SLUG = "bench-signing"
HELLO_PATH = "/healthz"
SIGNER_PREFIX = "bench-signer-"
SIGNED = b"your signature has been added"
ALREADY = b"already signed"
TARGETS = {"form": 0.8, "post": 0.3, "pair": 0.25}  # rate / hello-world rate, each at least
TARGET_P99_MS = 250.0
PHASES = ("hello", "form", "post", "pair")

WORDING = ("By signing this petition you will receive periodic email updates from Refugee Rights "
           "Network. You may unsubscribe at any time.")
BODY = "\n\n".join(
    [f"## Why this matters ({i})\n\nFamilies seeking safety wait months for a decision, without the right "
     "to work and with **£49 a week** to live on. We ask the Home Secretary to *decide every claim "
     "within six months* and to lift the ban on working after three. [Read the report]"
     "(https://example.org/report)." for i in range(1, 5)]
    + ["- Decide claims within six months\n- The right to work after three months\n- Safe routes"])


@dataclass
class Settings:
    database_url: str = DEFAULT_URL
    redis_url: str = DEFAULT_REDIS
    seconds: float = 30.0  # each measured phase
    warmup: float = 5.0  # before each phase's window; its requests are not counted
    clients: int = 8  # simulated clients (one thread and connection each), all load processes together
    loaders: int = 2  # load processes sharing the clients
    workers: int = 2
    worker_class: str = "gthread"
    threads: int = 4  # per gunicorn worker (gthread only)
    # Signatures (and supporters) the petition holds before the run. Not 0: on empty tables
    # PostgreSQL plans the foreign-key checks of a signature as sequential scans, and with
    # autovacuum off (as on some bench servers) nothing re-plans them as the tables grow, so a
    # run from empty measures those scans (about 0.3 ms more PostgreSQL CPU per signature),
    # not a CRM in use.
    existing: int = 10_000
    rate_limit: str = "1000000/10 minutes"  # SIGN_RATE_LIMIT for the bench (far above any run)

    @classmethod
    def from_env(cls) -> Settings:
        from bench import settings_from_env

        return settings_from_env(cls(), "BENCH_SIGNING")


# ---- the load process --------------------------------------------------------------------------

@dataclass
class ClientLog:
    """What one simulated client saw; merged per load process, then across processes."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"hello": [], "form": [], "sign": []})
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)  # 200 "your signature has been added"
    already: list[str] = field(default_factory=list)  # 200 "already signed": a duplicate identity
    refused: list[str] = field(default_factory=list)  # any other answer to the POST
    uncertain: list[str] = field(default_factory=list)  # the POST failed in transit: may or may not be kept
    signed_in_window: int = 0
    cookies_set: int = 0  # Set-Cookie headers from the public pages (there should be none)


VERSION_RE = re.compile(rb'name="wording_version" type="hidden" value="([^"]*)"')


class Client:
    """One browser: a keep-alive connection, sending what a browser sends from our own page."""

    def __init__(self, port: int, log: ClientLog):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.origin = f"http://127.0.0.1:{port}"
        self.log = log

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        headers = {"User-Agent": "bench-signing/1.0 (http.client)", "Accept": "text/html"}
        if body is not None:
            headers.update({"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin,
                            "Sec-Fetch-Site": "same-origin"})
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request opens a new connection
            raise
        self.log.cookies_set += len(resp.headers.get_all("Set-Cookie") or ())
        return resp.status, data


def _get_loop(port: int, window: tuple[float, float], log: ClientLog, kind: str, path: str) -> None:
    """GET `path` over and over (the hello world, or the sign form alone)."""
    client = Client(port, log)
    while time.perf_counter() < window[1]:
        started = time.perf_counter()
        try:
            status, page = client.request("GET", path)
        except (OSError, http.client.HTTPException) as exc:
            log.errors[f"{kind} {type(exc).__name__}"] += 1
            continue
        done = time.perf_counter()
        log.statuses[f"{kind} {status}"] += 1
        if kind == "form" and VERSION_RE.search(page) is None:
            log.errors["form without the form"] += 1
        elif window[0] <= done <= window[1] and status == 200:
            log.latencies[kind].append(done - started)


def _wording_version(client: Client, log: ClientLog) -> bytes | None:
    """The wording version the sign form carries, as a signer's page has it."""
    try:
        status, page = client.request("GET", f"/p/{SLUG}")
    except (OSError, http.client.HTTPException) as exc:
        log.errors[f"form {type(exc).__name__}"] += 1
        return None
    log.statuses[f"form {status}"] += 1
    found = VERSION_RE.search(page)
    if status != 200 or found is None:
        log.errors["form without the form"] += 1
        return None
    return found.group(1)


def _sign(client: Client, window: tuple[float, float], log: ClientLog, email: str, version: bytes) -> None:
    body = urlencode({"wording_version": version.decode(), "email": email, "first_name": "Bench",
                      "last_name": "Signer", "postal_code": "N1 9GU", "country": "GB", "comment": "",
                      "website": ""})
    started = time.perf_counter()
    try:
        status, page = client.request("POST", f"/p/{SLUG}/sign", body)
    except (OSError, http.client.HTTPException) as exc:
        log.errors[f"sign {type(exc).__name__}"] += 1
        log.uncertain.append(email)
        return
    done = time.perf_counter()
    log.statuses[f"sign {status}"] += 1
    in_window = window[0] <= done <= window[1]
    if in_window:
        log.latencies["sign"].append(done - started)
    if status == 200 and SIGNED in page:
        log.accepted.append(email)
        log.signed_in_window += in_window
    elif status == 200 and ALREADY in page:
        log.already.append(email)
    else:
        log.refused.append(email)


def _sign_loop(port: int, window: tuple[float, float], log: ClientLog, prefix: str, with_form: bool) -> None:
    """Sign with a new address each time: the POST alone, or (with_form) the form GET before each."""
    client = Client(port, log)
    version = None if with_form else _wording_version(client, log)
    n = 0
    while time.perf_counter() < window[1]:
        n += 1
        if with_form:
            started = time.perf_counter()
            version = _wording_version(client, log)
            if version is None:
                continue
            if window[0] <= time.perf_counter() <= window[1]:
                log.latencies["form"].append(time.perf_counter() - started)
        elif version is None:
            return
        _sign(client, window, log, f"{SIGNER_PREFIX}{prefix}-{n}@example.net", version)


def load(spec: dict) -> dict:
    """Run `spec["clients"]` threads of one phase; return the merged log and this process's CPU."""
    start = spec["start_at"] - time.time() + time.perf_counter()  # wall-clock barrier across processes
    window = (start + spec["warmup"], start + spec["warmup"] + spec["seconds"])
    logs = [ClientLog() for _ in range(spec["clients"])]
    threads = []
    phase = spec["phase"]
    for i, log in enumerate(logs):
        if phase in ("hello", "form"):
            args = (spec["port"], window, log, phase, HELLO_PATH if phase == "hello" else f"/p/{SLUG}")
            target = _get_loop
        else:
            args = (spec["port"], window, log, f"{phase}-{spec['loader']}-{i}", phase == "pair")
            target = _sign_loop
        threads.append(threading.Thread(target=target, args=args, daemon=True))
    time.sleep(max(0.0, start - time.perf_counter()))
    for t in threads:
        t.start()
    time.sleep(max(0.0, window[0] - time.perf_counter()))
    cpu = time.process_time()
    time.sleep(max(0.0, window[1] - time.perf_counter()))
    cpu = time.process_time() - cpu
    for t in threads:
        t.join()
    merged = ClientLog()
    for log in logs:
        for kind, values in log.latencies.items():
            merged.latencies[kind].extend(values)
        merged.statuses.update(log.statuses)
        merged.errors.update(log.errors)
        for name in ("accepted", "already", "refused", "uncertain"):
            getattr(merged, name).extend(getattr(log, name))
        merged.signed_in_window += log.signed_in_window
        merged.cookies_set += log.cookies_set
    # Not dataclasses.asdict: it would rebuild each Counter from (key, value) pairs, counting the pairs.
    return {**vars(merged), "cpu_seconds": cpu}


# ---- the server --------------------------------------------------------------------------------

def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # (busy, total): idle and iowait are not busy


class Gunicorn:
    """gunicorn on a free port serving crm.wsgi:app, its log in a temp file."""

    def __init__(self, settings: Settings, env: dict):
        from crm.outbox.server import free_port

        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="crm-bench-gunicorn-", suffix=".log", delete=False)
        cmd = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(settings.workers), "--worker-class", settings.worker_class,
               "crm.wsgi:app"]
        if settings.worker_class == "gthread":
            cmd[-1:-1] = ["--threads", str(settings.threads)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.workers = settings.workers
        self._wait_ready()

    def worker_pids(self) -> list[int]:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def _wait_ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.tail()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", HELLO_PATH)
                if conn.getresponse().status == 200 and len(self.worker_pids()) >= self.workers:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready after {seconds:.0f}s: {self.tail()}")

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.worker_pids():
            try:
                total += _cpu_ticks(pid)
            except OSError:
                continue
        return total

    def tail(self) -> str:
        return " | ".join(Path(self.log.name).read_text(errors="replace").strip().splitlines()[-3:])

    def problems(self) -> int:
        """Log lines reporting an error: app tracebacks, worker timeouts or crashes."""
        lines = Path(self.log.name).read_text(errors="replace").splitlines()
        return sum(1 for line in lines if " ERROR " in line or "[CRITICAL]" in line or line.startswith("Traceback"))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # graceful: workers finish their requests
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


# ---- the parent: set up, drive the phases, check the database ----------------------------------

def prepare_database(settings: Settings) -> int:
    """Fresh schema, one open petition (plus `existing` signatures); return its id."""
    import psycopg
    import redis
    from flask_migrate import upgrade
    from psycopg import sql
    from sqlalchemy import text

    from crm import create_app
    from crm.extensions import db
    from crm.petitions import service

    base, _, name = settings.database_url.rpartition("/")
    if name in ("test", "bench"):
        raise SystemExit(f"BENCH_SIGNING_DATABASE_URL must not be the shared database {name!r}")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    redis.Redis.from_url(settings.redis_url).flushdb()

    instance = tempfile.TemporaryDirectory(prefix="crm-bench-")
    app = create_app({"CRM_ENV": "testing", "SECRET_KEY": "bench", "DATABASE_URL": settings.database_url,
                      "REDIS_URL": settings.redis_url, "INSTANCE_PATH": instance.name})
    with instance, app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        petition = service.save_petition({
            "slug": SLUG, "title": "Decide asylum claims within six months", "body": BODY,
            "addressed_to": "The Home Secretary", "goal": 250_000, "thank_you_message": "Please share it.",
            "redirect_url": "", "consent_wording": WORDING, "consent_mode": "implied"})
        service.change_status(petition, "publish")
        if settings.existing:
            db.session.execute(text(
                """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status,
                       source, custom_fields, notes, created_at, updated_at)
                   SELECT 'seed' || g || '@example.net', 'Seed', 'Signer', 'N1 9GU', 'GB', 'subscribed',
                          'petition:' || :slug, '{}', '', now(), now()
                   FROM generate_series(1, :n) g"""), {"slug": SLUG, "n": settings.existing})
            db.session.execute(text(
                """INSERT INTO signature (petition_id, supporter_id, comment, source, created_at)
                   SELECT :pid, id, '', 'web', now() - interval '1 day' FROM supporter
                   WHERE email LIKE 'seed%'"""), {"pid": petition.id})
            db.session.commit()
        petition_id = petition.id
        db.session.remove()
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        db.engine.dispose()
    return petition_id


def _backend_pids(url: str) -> list[int]:
    """PostgreSQL backends serving our database (the workers' pooled connections)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]


def _ticks_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += _cpu_ticks(pid)
        except OSError:
            continue  # gone (or not ours to read): counted as nothing
    return total


def run_phase(phase: str, settings: Settings, server: Gunicorn) -> dict:
    """Start the load processes together, sample CPU over the window, merge what they saw."""
    start_at = time.time() + 1.5  # time for the interpreters to start
    share = [settings.clients // settings.loaders + (i < settings.clients % settings.loaders)
             for i in range(settings.loaders)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "bench.bench_signing", "--load", json.dumps({
            "phase": phase, "port": server.port, "clients": n, "loader": i, "start_at": start_at,
            "warmup": settings.warmup, "seconds": settings.seconds})],
        cwd=ROOT, stdout=subprocess.PIPE, text=True) for i, n in enumerate(share) if n]
    time.sleep(max(0.0, start_at + settings.warmup - time.time()))
    backends = _backend_pids(settings.database_url)
    server_before, pg_before, machine_before = server.cpu_ticks(), _ticks_of(backends), _machine_ticks()
    time.sleep(max(0.0, start_at + settings.warmup + settings.seconds - time.time()))
    server_ticks, pg_ticks = server.cpu_ticks() - server_before, _ticks_of(backends) - pg_before
    machine = _machine_ticks()
    from bench import collect_json

    outs = collect_json(procs, phase)
    merged: dict = {"latencies": {"hello": [], "form": [], "sign": []}, "statuses": Counter(), "errors": Counter(),
                    "accepted": [], "already": [], "refused": [], "uncertain": [], "signed_in_window": 0,
                    "cookies_set": 0, "cpu_seconds": 0.0}
    for out in outs:
        for kind, values in out["latencies"].items():
            merged["latencies"][kind].extend(values)
        for key in ("statuses", "errors"):
            merged[key].update(out[key])
        for key in ("accepted", "already", "refused", "uncertain", "signed_in_window", "cookies_set", "cpu_seconds"):
            merged[key] += out[key]
    clock = os.sysconf("SC_CLK_TCK")
    merged["server_cpu_seconds"] = server_ticks / clock
    merged["postgres_cpu_seconds"] = pg_ticks / clock
    busy, total = machine[0] - machine_before[0], machine[1] - machine_before[1]
    merged["machine_busy"] = busy / total if total else 0.0
    return merged


def count_in_database(settings: Settings, petition_id: int) -> dict[str, Counter]:
    """Per signer email: signatures on the petition, supporter rows, opt_in consent events."""
    import psycopg

    like = SIGNER_PREFIX + "%"
    queries = {
        "signatures": """SELECT s.email, count(*) FROM signature g JOIN supporter s ON s.id = g.supporter_id
                         WHERE g.petition_id = %(pid)s AND s.email LIKE %(like)s GROUP BY s.email""",
        "supporters": "SELECT email, count(*) FROM supporter WHERE email LIKE %(like)s GROUP BY email",
        "consent_events": """SELECT s.email, count(*) FROM consent_event c JOIN supporter s ON s.id = c.supporter_id
                             WHERE c.source = %(source)s AND c.action = 'opt_in' AND s.email LIKE %(like)s
                             GROUP BY s.email""",
    }
    params = {"pid": petition_id, "like": like, "source": f"petition:{SLUG}"}
    with psycopg.connect(settings.database_url) as conn:
        counts = {name: Counter(dict(conn.execute(q, params).fetchall())) for name, q in queries.items()}
        anonymous = conn.execute("SELECT count(*) FROM signature WHERE petition_id = %s AND supporter_id IS NULL",
                                 (petition_id,)).fetchone()[0]
    counts["anonymous"] = Counter({"": anonymous}) if anonymous else Counter()
    return counts


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def _latency_notes(values: list[float]) -> str:
    return (f"p50 {percentile(values, 0.50):.1f} ms, p95 {percentile(values, 0.95):.1f} ms, "
            f"max {max(values, default=0) * 1000:.0f} ms, n={len(values):,}")


def _server_cpu_ms(result: dict, done: int) -> float:
    """Server CPU (gunicorn workers plus their PostgreSQL backends) per unit of work, in ms.

    It moves less with the machine's other load than the rates do.
    """
    cpu = result["server_cpu_seconds"] + result["postgres_cpu_seconds"]
    return cpu / done * 1000 if done else float("nan")


def _cpu_notes(result: dict, settings: Settings) -> str:
    """Where the window's CPU went, in cores."""
    cores = os.cpu_count() or 1
    server, pg, loaders = (result[k] / settings.seconds
                           for k in ("server_cpu_seconds", "postgres_cpu_seconds", "cpu_seconds"))
    machine = result["machine_busy"] * cores
    return (f"gunicorn + our PostgreSQL backends per unit; cores busy in window: gunicorn {server:.2f}, PostgreSQL "
            f"{pg:.2f}, load processes {loaders:.2f}, anything else {max(0.0, machine - server - pg - loaders):.2f} "
            f"(of {cores}; PostgreSQL's parallel query workers count as anything else)")


def _check(met: bool) -> str:
    return "met" if met else "NOT met"


def run(settings: Settings | None = None) -> list[dict]:
    settings = settings or Settings.from_env()
    try:
        return _run(settings)
    except RuntimeError as exc:  # gunicorn or a load process failed: one row saying why, not a traceback
        return [{"case": "failed", "value": "", "unit": "", "notes": str(exc)[:300]}]


def _run(settings: Settings) -> list[dict]:
    petition_id = prepare_database(settings)
    env = {**os.environ, "CRM_ENV": "production", "SECRET_KEY": "bench-signing-not-a-secret",
           "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "SIGN_RATE_LIMIT": settings.rate_limit}
    env.pop("SMTP_URL", None)
    server = Gunicorn(settings, env)
    try:
        results = {phase: run_phase(phase, settings, server) for phase in PHASES}
        log_problems = server.problems()
    finally:
        server.stop()
    counts = count_in_database(settings, petition_id)
    hello, form, post, pair = (results[p] for p in PHASES)

    done = {"hello": len(hello["latencies"]["hello"]), "form": len(form["latencies"]["form"]),
            "post": post["signed_in_window"], "pair": pair["signed_in_window"]}
    rates = {phase: n / settings.seconds for phase, n in done.items()}
    cpu = {phase: _server_cpu_ms(results[phase], done[phase]) for phase in PHASES}
    ratios = {phase: rates[phase] / rates["hello"] if rates["hello"] else 0.0 for phase in TARGETS}
    p99s = [percentile(r["latencies"]["sign"], 0.99) for r in (post, pair)]

    signing = [post, pair]
    accepted_list = [e for r in signing for e in r["accepted"]]
    accepted = set(accepted_list)
    uncertain = {e for r in signing for e in r["uncertain"]}
    lost = {name: len(accepted - set(counts[name])) for name in ("signatures", "supporters", "consent_events")}
    duplicated = {name: sum(n - 1 for n in counts[name].values() if n > 1)
                  for name in ("signatures", "supporters", "consent_events")}
    duplicated["already-signed answers"] = sum(len(r["already"]) for r in signing)
    duplicated["accepted twice by the client"] = len(accepted_list) - len(accepted)
    recorded = set(counts["signatures"])
    unexpected = len(recorded - accepted - uncertain)
    uncertain_kept = len(recorded & uncertain)
    n_lost, n_dup = sum(lost.values()), sum(duplicated.values())
    cookies = sum(r["cookies_set"] for r in (form, post, pair))

    statuses = "; ".join(f"{phase}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(results[phase]["statuses"].items()))
                         for phase in ("post", "pair"))
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(sum((r["errors"] for r in results.values()), Counter()).items()))
    server_desc = (f"{settings.workers} {settings.worker_class} workers"
                   + (f" x {settings.threads} threads" if settings.worker_class == "gthread" else ""))
    load_desc = (f"{settings.clients} clients in {settings.loaders} load processes, "
                 f"{settings.warmup:g}s warm-up + {settings.seconds:g}s measured per phase")
    met = {phase: ratios[phase] >= TARGETS[phase] for phase in TARGETS}
    met_all = all(met.values()) and max(p99s) < TARGET_P99_MS and n_lost == n_dup == 0

    def ratio_row(phase: str, what: str) -> dict:
        return {"case": f"ratio {what} / hello", "value": f"{ratios[phase]:.2f}", "unit": "",
                "notes": f"target {TARGETS[phase]:.2f} or more: {_check(met[phase])}; from server CPU per unit "
                         f"{cpu['hello'] / cpu[phase] if cpu[phase] else 0:.2f} (less sensitive to other load)"}

    def p99_row(case: str, values: list[float], with_target: bool = False) -> dict:
        p99 = percentile(values, 0.99)
        target = f"target < {TARGET_P99_MS:.0f} ms: {_check(p99 < TARGET_P99_MS)}; " if with_target else ""
        return {"case": case, "value": f"{p99:.1f}", "unit": "ms", "notes": target + _latency_notes(values)}

    def cpu_row(case: str, phase: str, unit: str) -> dict:
        return {"case": case, "value": f"{cpu[phase]:.2f}", "unit": unit, "notes": _cpu_notes(results[phase], settings)}

    return [
        {"case": "hello world", "value": f"{rates['hello']:,.0f}", "unit": "req/s",
         "notes": f"GET {HELLO_PATH}, {server_desc}; {load_desc}"},
        p99_row("hello world latency p99", hello["latencies"]["hello"]),
        cpu_row("hello world CPU", "hello", "ms/req"),
        {"case": "sign form GET alone", "value": f"{rates['form']:,.0f}", "unit": "req/s",
         "notes": f"GET /p/{SLUG}; petition held {settings.existing:,} signatures before"},
        p99_row("sign form GET latency p99", form["latencies"]["form"]),
        cpu_row("sign form GET CPU", "form", "ms/req"),
        ratio_row("form", "form GET"),
        {"case": "sign POST alone", "value": f"{rates['post']:,.1f}", "unit": "signatures/s",
         "notes": f"POST /p/{SLUG}/sign, a new address each, as from the page (Sec-Fetch-Site: same-origin)"},
        p99_row("sign POST alone latency p99", post["latencies"]["sign"], with_target=True),
        cpu_row("sign POST alone CPU", "post", "ms/signature"),
        ratio_row("post", "POST"),
        {"case": "signing, form + POST", "value": f"{rates['pair']:,.1f}", "unit": "signatures/s",
         "notes": f"each = GET /p/{SLUG} + POST .../sign"},
        p99_row("pair: POST latency p99", pair["latencies"]["sign"], with_target=True),
        p99_row("pair: form GET latency p99", pair["latencies"]["form"]),
        cpu_row("pair CPU", "pair", "ms/signature"),
        ratio_row("pair", "form + POST"),
        {"case": "signatures accepted by client", "value": f"{len(accepted_list):,}", "unit": "signatures",
         "notes": f"POST-alone and pair phases incl. warm-up; {statuses}; client errors: {errors or 'none'}; "
                  f"{log_problems} error lines in gunicorn's log; {cookies} Set-Cookie from public pages"},
        {"case": "signatures in database", "value": f"{sum(counts['signatures'].values()):,}", "unit": "signatures",
         "notes": f"{sum(counts['supporters'].values()):,} supporters, "
                  f"{sum(counts['consent_events'].values()):,} opt_in consent events, "
                  f"{sum(counts['anonymous'].values())} anonymous; {unexpected} kept without a 200, "
                  f"{uncertain_kept} of {len(uncertain)} failed-in-transit kept"},
        {"case": "lost", "value": f"{n_lost}", "unit": "",
         "notes": "accepted but missing: " + ", ".join(f"{k} {v}" for k, v in lost.items())},
        {"case": "duplicated", "value": f"{n_dup}", "unit": "",
         "notes": ", ".join(f"{k} {v}" for k, v in duplicated.items())},
        {"case": "all targets", "value": "met" if met_all else "NOT met", "unit": "",
         "notes": f"SIGN_RATE_LIMIT={settings.rate_limit!r} for this bench only (default 20/10 minutes per "
                  f"IP; every request comes from 127.0.0.1); 2 cores shared by server, PostgreSQL and load"},
    ]


# ---- where a POST's time goes, in process ------------------------------------------------------

BREAKDOWN_ROUNDS = 3  # runs of each case; the least disturbed by the machine's other work is kept


def _wsgi_caller(app):
    """call(method, path, body) -> response bytes, through app.wsgi_app with an environ as gunicorn builds it."""
    import io

    def call(method: str, path: str, body: bytes = b"") -> bytes:
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                   "wsgi.multiprocess": True, "wsgi.run_once": False, "REMOTE_ADDR": "127.0.0.1",
                   "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "bench-signing/1.0", "HTTP_ACCEPT": "text/html"}
        if body:
            environ.update({"CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
                            "HTTP_ORIGIN": "http://127.0.0.1:8000", "HTTP_SEC_FETCH_SITE": "same-origin"})
        answer = []
        chunks = app.wsgi_app(environ, lambda status, headers, exc_info=None: answer.append(status))
        try:
            page = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        if not answer[0].startswith("200"):
            raise RuntimeError(f"{method} {path}: {answer[0]}")
        return page
    return call


def breakdown(settings: Settings, rounds: int = 2000) -> list[dict]:
    """The web process's CPU for one sign POST, and each part's share, measured in process.

    The POST runs through the WSGI app (no HTTP server, no load generator) with a CPU clock
    around each part, in the same requests, so the parts and the rest add up to the whole
    however busy the machine is. Of a few runs the one with the least CPU per POST is kept.
    Server-side work of PostgreSQL and Redis is not in these figures (the load run's CPU rows
    hold PostgreSQL's).
    """
    from contextlib import ExitStack
    from unittest import mock

    from crm import create_app
    from crm.public import views

    prepare_database(settings)
    instance = tempfile.TemporaryDirectory(prefix="crm-bench-")
    app = create_app({"CRM_ENV": "production", "SECRET_KEY": "bench-signing-not-a-secret",
                      "INSTANCE_PATH": instance.name, "DATABASE_URL": settings.database_url,
                      "REDIS_URL": settings.redis_url, "SIGN_RATE_LIMIT": settings.rate_limit})
    call = _wsgi_caller(app)
    version = VERSION_RE.search(call("GET", f"/p/{SLUG}")).group(1).decode()
    signers = iter(range(10**9))
    spent: Counter = Counter()

    def clocked(name: str, function):
        def run(*args, **kwargs):
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started
        run.__name__ = function.__name__
        return run

    def post() -> bytes:
        return call("POST", f"/p/{SLUG}/sign", urlencode({
            "wording_version": version, "email": f"{SIGNER_PREFIX}breakdown-{next(signers)}@example.net",
            "first_name": "Bench", "last_name": "Signer", "postal_code": "N1 9GU", "country": "GB", "comment": "",
            "website": ""}).encode())

    def cpu_us(request) -> float:
        for _ in range(rounds // 10):  # warm
            request()
        spent.clear()
        started = time.process_time()
        for _ in range(rounds):
            request()
        return (time.process_time() - started) / rounds * 1e6

    parts = {
        "the sign statement (crm.petitions.signing: SQLAlchemy, psycopg, the PostgreSQL round trip)":
            (views, "record_signature"),
        "the per-IP limit (limits' moving window: a Redis round trip)": (views.throttle, "allow_attempt"),
        "the count bump (a Redis round trip)": (views.service, "signature_added"),
        "checking the fields (quick_signature_data)": (views, "quick_signature_data"),
    }
    checks = "the input and cross-origin checks (crm.input_guard, crm.cross_origin; the form is parsed here)"
    hooks = [clocked(checks, f) if f.__name__ in ("guard", "check") else f for f in app.before_request_funcs[None]]
    with app.app_context():
        hello = min(cpu_us(lambda: call("GET", HELLO_PATH)) for _ in range(BREAKDOWN_ROUNDS))
        with ExitStack() as stack:
            for name, (owner, attribute) in parts.items():
                stack.enter_context(mock.patch.object(owner, attribute, clocked(name, getattr(owner, attribute))))
            stack.enter_context(mock.patch.dict(app.before_request_funcs, {None: hooks}))
            runs = []
            for _ in range(BREAKDOWN_ROUNDS):
                whole = cpu_us(post)
                runs.append((whole, {name: us / rounds * 1e6 for name, us in spent.items()}))
    instance.cleanup()
    whole, shares = min(runs, key=lambda run: run[0])
    rest = whole - hello - sum(shares.values())
    rows = [{"case": "GET /healthz", "value": f"{hello:.0f}", "unit": "us CPU",
             "notes": f"the same app, in process; best of {BREAKDOWN_ROUNDS} runs of {rounds:,} requests"},
            {"case": "sign POST, whole", "value": f"{whole:.0f}", "unit": "us CPU",
             "notes": f"{hello / whole:.2f} of the hello world's cost (in process, so no HTTP parsing in either)"}]
    rows += [{"case": f"  of which {name}", "value": f"{shares.get(name, 0):.0f}", "unit": "us CPU",
              "notes": f"{shares.get(name, 0) / whole:.0%}"} for name in (*parts, checks)]
    rows.append({"case": "  of which what the hello world costs too (routing, request context, hooks)",
                 "value": f"{hello:.0f}", "unit": "us CPU", "notes": f"{hello / whole:.0%}"})
    rows.append({"case": "  of which the rest (the thank-you page, the headers, the POST's own plumbing)",
                 "value": f"{rest:.0f}", "unit": "us CPU", "notes": f"{rest / whole:.0%}"})
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_signing", description=__doc__.split("\n")[0])
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: one load process
    parser.add_argument("--breakdown", action="store_true",
                        help="instead of the load run: a sign POST's CPU in the web process, part by part")
    defaults = Settings.from_env()
    settings_arguments(parser, defaults, "BENCH_SIGNING")
    args = parser.parse_args(argv)
    if args.load:
        print(json.dumps(load(json.loads(args.load))))
        return 0
    from bench.__main__ import print_table

    settings = settings_from_args(args, defaults)
    rows = breakdown(settings) if args.breakdown else run(settings)
    print_table([{"benchmark": "signing", **row} for row in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
