"""Feedback intake: a burst of provider events through gunicorn, and the bounce mailbox.

Targets: webhook events/s at least 0.3 of /healthz requests/s in the same run, every event
applied exactly once (counted in the database afterwards); and the mailbox's messages/s.

One run (PostgreSQL database BENCH_FEEDBACK_DATABASE_URL, default .../bench_feedback, dropped
and made afresh; Redis BENCH_FEEDBACK_REDIS_URL, default db 11 (each bench has its own), flushed):
1. A campaign with `events` sent messages, one supporter each. Events are made for distinct
   messages, mixed as relays report them: 80% deliveries, 15% bounces (two thirds hard), 5%
   complaints. `ses_share` of them go to /hooks/ses as signed SNS notifications, one per
   request (SNS sends them so); the rest to /hooks/sendgrid in signed batches of `batch`.
   The SNS signing certificate is served over HTTPS from 127.0.0.1 (tests/feedback_fixtures.py).
2. gunicorn serves crm.wsgi:app (2 gthread workers) and `apply_workers` `crm worker`
   processes apply the feedback intake as it fills (feedback/intake.py), on the same machine;
   load processes with keep-alive connections run /healthz for `seconds`, then the SES burst,
   then the SendGrid burst.
3. After the bursts, the workers are given until the intake and the delivery stream are empty
   (how long each took is reported); then counted: messages with delivered_at, feedback_event rows per kind, and the
   supporters' statuses, against what was sent; every answer must have been 200, and no intake
   row may be left or set aside as failed.
4. Mailbox: `mailbox` Postfix DSNs for other messages are put into a Dovecot started for the
   run (tests/dovecot.py), then one `crm bounces fetch` reads and applies them all.

    python -m bench feedback
    python -m bench.bench_feedback --events 20000 --mailbox 2000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_feedback"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
TARGET_RATIO = 0.3


@dataclass
class Settings:
    database_url: str = DEFAULT_URL
    redis_url: str = DEFAULT_REDIS
    events: int = 100_000
    ses_share: float = 0.3
    batch: int = 100
    seconds: float = 10.0  # the /healthz phase
    clients: int = 8
    loaders: int = 2
    workers: int = 2
    threads: int = 4
    apply_workers: int = 1  # `crm worker` processes applying the intake during the bursts
    mailbox: int = 10_000
    keep: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        from bench import settings_from_env

        return settings_from_env(cls(), "BENCH_FEEDBACK")


# ---- load processes ---------------------------------------------------------------------------

def _load(spec: dict) -> dict:
    """Send this process's share of requests over `clients` keep-alive connections."""
    port, clients = spec["port"], spec["clients"]
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    if spec["phase"] == "hello":
        deadline = spec["start_at"] + spec["seconds"]
        counts = [0] * clients

        def hello(i):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.time() < deadline:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                counts[i] += 1
            conn.close()

        time.sleep(max(0.0, spec["start_at"] - time.time()))
        threads = [threading.Thread(target=hello, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"requests": sum(counts), "statuses": {"200": sum(counts)}}
    with open(spec["path"]) as fh:
        requests = [json.loads(line) for n, line in enumerate(fh) if n % spec["of"] == spec["index"]]
    queue = list(reversed(requests))

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                item = queue.pop()
            conn.request("POST", item["path"], body=item["body"].encode(), headers=item["headers"])
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
        conn.close()

    time.sleep(max(0.0, spec["start_at"] - time.time()))
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": len(requests), "statuses": statuses, "finished": time.time()}


def run_phase(settings: Settings, port: int, phase: str, path: str | None = None) -> tuple[dict, float]:
    start_at = time.time() + 1.0
    share = [settings.clients // settings.loaders + (i < settings.clients % settings.loaders)
             for i in range(settings.loaders)]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_feedback", "--load", json.dumps({
        "phase": phase, "port": port, "clients": n, "start_at": start_at, "seconds": settings.seconds,
        "path": path, "index": i, "of": settings.loaders})], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for i, n in enumerate(share)]
    from bench import collect_json

    outs = collect_json(procs, phase)
    merged = {"requests": sum(o["requests"] for o in outs), "statuses": {}}
    for o in outs:
        for k, v in o["statuses"].items():
            merged["statuses"][k] = merged["statuses"].get(k, 0) + v
    elapsed = settings.seconds if phase == "hello" else max(o["finished"] for o in outs) - start_at
    return merged, elapsed


# ---- data and payloads ------------------------------------------------------------------------

def prepare(settings: Settings, app) -> tuple[int, list[tuple[int, str, str]]]:
    """Supporters and one sent campaign's messages; returns (campaign id, [(message id, email, msgid)])."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm.extensions import db
    from tests import factories

    total = settings.events + settings.mailbox
    with app.app_context():
        upgrade()
        campaign = factories.make_campaign(status="sent", sent_count=total)
        db.session.execute(text(
            """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
                   custom_fields, notes, created_at, updated_at)
               SELECT 'fb' || g || '@example.net', 'Bench', 'Person', '', '', 'subscribed', 'bench', '{}', '',
                      now(), now() FROM generate_series(1, :n) g"""), {"n": total})
        db.session.execute(text(
            """INSERT INTO message (campaign_id, supporter_id, email, status, attempts, error, created_at, sent_at,
                   smtp_message_id)
               SELECT :c, id, email, 'sent', 1, '', now(), now(), '' FROM supporter ORDER BY id"""),
            {"c": campaign.id})
        db.session.execute(text(
            "UPDATE message SET smtp_message_id = '<' || id || '.' || campaign_id"
            " || '.0123456789ab@news.example.org>'"))
        db.session.commit()
        rows = db.session.execute(text("SELECT id, email, smtp_message_id FROM message ORDER BY id")).all()
        campaign_id = campaign.id
        db.session.remove()
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return campaign_id, [tuple(r) for r in rows]


def _kind(n: int) -> str:
    r = n % 20
    return "delivery" if r < 16 else "hard" if r < 18 else "soft" if r < 19 else "complaint"


_SIGNER = None


def _init_signer(key_pem: bytes, cert_url: str):
    global _SIGNER
    from cryptography.hazmat.primitives import serialization

    _SIGNER = (serialization.load_pem_private_key(key_pem, None), cert_url)


def _sign_sns(item: tuple) -> str:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from feedback.providers.ses import canonical_string

    doc = json.loads(item[0])
    key, cert_url = _SIGNER
    doc.update(SignatureVersion="2", SigningCertURL=cert_url)
    doc["Signature"] = base64.b64encode(key.sign(canonical_string(doc, "Notification"), padding.PKCS1v15(),
                                                 hashes.SHA256())).decode()
    return json.dumps(doc)


def write_payloads(settings, campaign_id, rows, sns, sendgrid_key, folder: Path) -> dict:
    """SES and SendGrid request files (JSON lines), and the counts the database must show after."""
    from cryptography.hazmat.primitives import serialization

    from tests.feedback_fixtures import sendgrid_headers, ses_bounce, ses_complaint, ses_delivery, sns_notification

    expected = {"delivery": 0, "hard": 0, "soft": 0, "complaint": 0}
    ses_count = int(settings.events * settings.ses_share)
    ses_docs, sendgrid_events = [], []
    for n, (mid, email, msgid) in enumerate(rows[:settings.events]):
        kind = _kind(n)
        expected[kind] += 1
        message = type("M", (), {"id": mid, "campaign_id": campaign_id, "smtp_message_id": msgid})
        if n < ses_count:
            if kind == "delivery":
                ses = ses_delivery(message, email)
            elif kind == "complaint":
                ses = ses_complaint(message, email)
            else:
                kind_status = ("Permanent", "5.1.1") if kind == "hard" else ("Transient", "4.2.2")
                ses = ses_bounce(message, email, *kind_status)
            ses_docs.append((json.dumps(sns_notification(ses, f"bench-{mid}")),))
        else:
            event = {"email": email, "timestamp": int(time.time()), "smtp-id": msgid, "sg_event_id": f"sg-{mid}",
                     "sg_message_id": f"bench.{mid}", "category": ["updates"]}
            event.update({"delivery": {"event": "delivered", "response": "250 OK"},
                          "hard": {"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no"},
                          "soft": {"event": "bounce", "type": "blocked", "status": "4.7.1", "reason": "451 later"},
                          "complaint": {"event": "spamreport"}}[kind])
            sendgrid_events.append(event)
    key_pem = sns.signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    with ProcessPoolExecutor(2, initializer=_init_signer, initargs=(key_pem, sns.cert_url)) as pool:
        signed = list(pool.map(_sign_sns, ses_docs, chunksize=500))
    ses_path, sg_path = folder / "ses.jsonl", folder / "sendgrid.jsonl"
    with ses_path.open("w") as fh:
        for body in signed:
            fh.write(json.dumps({"path": "/hooks/ses", "body": body, "headers": {
                "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}}) + "\n")
    with sg_path.open("w") as fh:
        for start in range(0, len(sendgrid_events), settings.batch):
            body = json.dumps(sendgrid_events[start:start + settings.batch])
            fh.write(json.dumps({"path": "/hooks/sendgrid", "body": body,
                                 "headers": sendgrid_headers(sendgrid_key, body.encode())}) + "\n")
    return {"expected": expected, "ses_events": ses_count, "sendgrid_events": len(sendgrid_events),
            "ses_path": str(ses_path), "sendgrid_path": str(sg_path),
            "sendgrid_requests": (len(sendgrid_events) + settings.batch - 1) // settings.batch}


def count_applied(app, campaign_id: int) -> dict:
    from sqlalchemy import text

    from crm.extensions import db

    with app.app_context():
        q = lambda sql: db.session.execute(text(sql), {"c": campaign_id}).scalar()  # noqa: E731
        counts = {
            "delivery": q("SELECT count(*) FROM message WHERE campaign_id = :c AND delivered_at IS NOT NULL"),
            "hard": q("SELECT count(*) FROM feedback_event WHERE kind = 'bounce' AND hard AND provider <> 'mailbox'"),
            "soft": q("SELECT count(*) FROM feedback_event WHERE kind = 'bounce' AND NOT hard"),
            "complaint": q("SELECT count(*) FROM feedback_event WHERE kind = 'complaint'"),
            "bouncing": q("SELECT count(*) FROM supporter WHERE email_status = 'bouncing'"),
            "complained": q("SELECT count(*) FROM supporter WHERE email_status = 'complained'"),
            "consent_events": q("SELECT count(*) FROM consent_event WHERE source LIKE 'bounce:%' "
                                "OR source LIKE 'complaint:%'"),
            "mailbox": q("SELECT count(*) FROM feedback_event WHERE provider = 'mailbox'"),
        }
        db.session.remove()
    return counts


class Workers:
    """`crm worker` processes (RQ workers with the periodic tasks) on the bench's database and Redis."""

    def __init__(self, count: int, env: dict, folder: Path):
        self.logs = [open(folder / f"worker-{n}.log", "w") for n in range(count)]
        crm = str(Path(sys.executable).with_name("crm"))
        self.procs = [subprocess.Popen([crm, "worker", "--no-scheduler"], cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT) for log in self.logs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()  # RQ's warm shutdown: the job in hand finishes
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()

    def problems(self) -> int:
        return sum(Path(log.name).read_text(errors="replace").count("Traceback") for log in self.logs)


def wait_for_intake(app, seconds: float = 900.0) -> tuple[int, float, int, int, float]:
    """(rows waiting when called, seconds until none waited, rows set aside as failed, deliveries
    waiting in the stream when called, seconds until the stream was empty)."""
    from crm.extensions import db
    from feedback.deliveries import waiting as deliveries_waiting
    from feedback.intake import backlog

    started = time.perf_counter()
    intake_s = stream_s = None
    with app.app_context():
        first = first_stream = None
        while True:
            waiting, failed = backlog()
            db.session.commit()
            streamed = deliveries_waiting()
            first = waiting if first is None else first
            first_stream = streamed if first_stream is None else first_stream
            if not waiting and intake_s is None:
                intake_s = time.perf_counter() - started
            if not streamed and stream_s is None:
                stream_s = time.perf_counter() - started
            if (intake_s is not None and stream_s is not None) or time.perf_counter() - started > seconds:
                break
            time.sleep(0.1)
        db.session.remove()
    over = time.perf_counter() - started
    return first, intake_s if intake_s is not None else over, failed, first_stream, \
        stream_s if stream_s is not None else over


def load_average() -> str:
    """The 1-minute load average now (the machine is shared: every figure is read with it)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def mailbox_phase(settings, app, campaign_id, rows) -> dict:
    from tests import feedback_corpus as corpus
    from tests.dovecot import Dovecot, available

    if not available() or not settings.mailbox:
        return {}
    box = Dovecot()
    try:
        mail = []
        for n, (mid, email, msgid) in enumerate(rows[settings.events:settings.events + settings.mailbox]):
            message = type("M", (), {"id": mid, "campaign_id": campaign_id, "smtp_message_id": msgid})
            mail.append(corpus.postfix_dsn(message, email, n=n))
        for start in range(0, len(mail), 1000):
            box.append(mail[start:start + 1000])
        from feedback.mailbox import fetch

        with app.app_context():
            started = time.perf_counter()
            result = fetch(box.url())
            elapsed = time.perf_counter() - started
        return {"read": result.read, "applied": result.applied, "seconds": elapsed, "left": box.count()}
    finally:
        box.stop()


def run(argv: list[str] | None = None):
    from bench.bench_signing import Gunicorn
    from bench.bench_signing import Settings as SigningSettings
    from bench.pg import fresh_database, release
    from crm import create_app
    from tests.feedback_fixtures import SNSServer, sendgrid_keys

    settings = Settings.from_env()
    parser = argparse.ArgumentParser()
    for name, value in asdict(settings).items():
        if isinstance(value, bool):
            parser.add_argument(f"--{name}", action="store_true", default=value)
        else:
            parser.add_argument(f"--{name}", type=type(value), default=value)
    args, _ = parser.parse_known_args(argv if argv is not None else [])
    settings = Settings(**{k: getattr(args, k) for k in asdict(settings)})
    import redis

    fresh_database(settings.database_url)
    redis.Redis.from_url(settings.redis_url).flushdb()
    folder = Path(tempfile.mkdtemp(prefix="crm-bench-feedback-"))
    sns = SNSServer(folder)
    sendgrid_key, public = sendgrid_keys()
    config = {"CRM_ENV": "testing", "SECRET_KEY": "bench-feedback", "DATABASE_URL": settings.database_url,
              "REDIS_URL": settings.redis_url, "INSTANCE_PATH": str(folder / "instance")}
    app = create_app(config)
    random.seed(7)
    campaign_id, rows = prepare(settings, app)
    with app.app_context():
        from feedback.settings import save_provider
        from tests import factories

        admin = factories.make_staff("admin")
        save_provider("ses", {"enabled": True, "auto_confirm": True}, admin.id)
        save_provider("sendgrid", {"enabled": True, "public_key": public}, admin.id)
    started = time.perf_counter()
    payloads = write_payloads(settings, campaign_id, rows, sns, sendgrid_key, folder)
    print(f"payloads written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    env = {**os.environ, "CRM_ENV": "production", "SECRET_KEY": "bench-feedback",
           "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "CRM_INSTANCE_PATH": str(folder / "instance"), "SNS_ALLOWED_HOSTS": sns.host,
           "SNS_CA_FILE": str(sns.ca_file), "FEEDBACK_MAX_AGE_SECONDS": "3600",
           "FEEDBACK_MAX_BODY_BYTES": str(8 * 1024 * 1024), "BASE_URL": "https://crm.example.org"}
    server = Gunicorn(SigningSettings(workers=settings.workers, threads=settings.threads), env)
    workers = Workers(settings.apply_workers, env, folder)
    try:
        loads = {"start": load_average()}
        hello, hello_s = run_phase(settings, server.port, "hello")
        loads["healthz"] = load_average()
        ses_run, ses_s = run_phase(settings, server.port, "post", payloads["ses_path"])
        loads["ses"] = load_average()
        sg_run, sg_s = run_phase(settings, server.port, "post", payloads["sendgrid_path"])
        loads["sendgrid"] = load_average()
        backlog_left, drain_s, failed, stream_left, stream_s = wait_for_intake(app)
        loads["drained"] = load_average()
        problems = server.problems() + workers.problems()
    finally:
        workers.stop()
        server.stop()
        sns.stop()
    counts = count_applied(app, campaign_id)
    mailbox = mailbox_phase(settings, app, campaign_id, rows)
    release(app, settings.database_url, str(folder), settings.keep)
    hello_rate = hello["requests"] / hello_s
    ses_rate, sg_rate = payloads["ses_events"] / ses_s, payloads["sendgrid_events"] / sg_s
    total_rate = settings.events / (ses_s + sg_s)
    exp = payloads["expected"]
    exact = all(counts[k] == exp[k] for k in exp) and not failed
    non_200 = {k: v for r in (ses_run, sg_run) for k, v in r["statuses"].items() if k != "200"}
    notes = (f"counts {counts}; expected {exp}; non-200 {non_200 or 'none'}; server and worker errors {problems}; "
             f"intake rows failed {failed}")
    queued = exp["hard"] + exp["soft"] + exp["complaint"]
    after_burst = f" ({backlog_left / drain_s:,.0f} events/s after the burst)" if backlog_left and drain_s else ""
    rows_out = [
        {"case": "/healthz (same gunicorn)", "value": f"{hello_rate:,.0f}", "unit": "req/s",
         "notes": f"{settings.workers} gthread workers x {settings.threads}"},
        {"case": "SES via SNS, 1 event/request", "value": f"{ses_rate:,.0f}", "unit": "events/s",
         "notes": f"{payloads['ses_events']:,} events; ratio {ses_rate / hello_rate:.2f} of /healthz"},
        {"case": f"SendGrid, {settings.batch} events/request", "value": f"{sg_rate:,.0f}", "unit": "events/s",
         "notes": f"{payloads['sendgrid_events']:,} events; ratio {sg_rate / hello_rate:.2f} of /healthz"},
        {"case": f"burst of {settings.events:,}, both endpoints", "value": f"{total_rate:,.0f}", "unit": "events/s",
         "notes": f"ratio {total_rate / hello_rate:.2f} (target {TARGET_RATIO}); applied exactly once: "
                  f"{'yes' if exact and not non_200 else 'NO'}; {notes}"},
        {"case": f"intake applied by {settings.apply_workers} worker(s)",
         "value": f"{queued / (ses_s + sg_s + drain_s):,.0f}", "unit": "events/s",
         "notes": f"{queued:,} bounces and complaints queued; {backlog_left:,} still waiting when the burst ended, "
                  f"applied {drain_s:.1f}s later{after_burst}"},
        {"case": "deliveries flushed from the stream", "value": f"{stream_left:,}", "unit": "waiting",
         "notes": f"when the burst ended; the stream was empty {stream_s:.1f}s later"},
        {"case": "load average (1 min)", "value": loads["ses"], "unit": "after SES",
         "notes": ", ".join(f"{k} {v}" for k, v in loads.items())},
    ]
    if mailbox:
        rows_out.append({"case": f"bounce mailbox, {settings.mailbox:,} DSNs (IMAP, Dovecot)",
                         "value": f"{mailbox['read'] / mailbox['seconds']:,.0f}", "unit": "messages/s",
                         "notes": f"{mailbox['applied']:,} applied in {mailbox['seconds']:.1f}s; "
                                  f"{mailbox['left']} left in the inbox"})
    return rows_out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--load":
        print(json.dumps(_load(json.loads(sys.argv[2]))))
        return
    from bench.__main__ import print_table

    print_table([{"benchmark": "feedback", **row} for row in run(sys.argv[1:])])


if __name__ == "__main__":
    main()
