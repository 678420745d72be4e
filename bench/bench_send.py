"""Campaign sending throughput against Postfix's smtp-sink, beside the raw smtplib limit.

On PostgreSQL (its own database, BENCH_SEND_DATABASE_URL, default .../bench_send, rebuilt each
run) with Redis (BENCH_SEND_REDIS_URL, default redis://127.0.0.1:6379/13, flushed):

1. generate BENCH_SEND_SNAPSHOT (default 1,000,000) subscribed supporters with generate_series,
   time the recipient snapshot of a segment matching all of them (one INSERT ... SELECT);
2. raw limit: BENCH_SEND_WORKERS (default 2) processes push pre-built messages of the same size
   as the campaign's over one smtplib connection each to smtp-sink;
3. the pipeline: a campaign to BENCH_SEND_RECIPIENTS (default 100,000) of them (a tag segment),
   sent by the same number of `crm worker` processes to the same sink (stopped once it is sent).

smtp-sink dumps every transaction to tmpfs (-D); the recipients are counted there afterwards, so
duplicates and missing messages are counted at the sink, not taken from our own table. Needs
root (smtp-sink drops to `nobody`) and Debian's postfix package:
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix

    python -m bench send
    BENCH_SEND_RECIPIENTS=20000 BENCH_SEND_SNAPSHOT=200000 python -m bench.bench_send
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.pg import fresh_database, release

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_send"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
SINK = "/usr/sbin/smtp-sink"
ROOT = Path(__file__).resolve().parents[1]

# About 22 KB per message once compiled, personalised and quoted-printable encoded.
PARAGRAPH = ("Thank you for standing with people seeking safety. This month our volunteers met "
             "with families in every region, and your signature was delivered by hand. ")
MJML = ("<mjml><mj-body><mj-section><mj-column>"
        "<mj-text font-size=\"20px\">Hello {{ supporter.first_name | default('friend') }},</mj-text>"
        + "".join(f"<mj-text>{PARAGRAPH * 4} ({i})</mj-text>" for i in range(12))
        + "<mj-button href=\"https://example.org/act\">Take action</mj-button>"
          "</mj-column></mj-section></mj-body></mjml>")

GENERATE = [
    "INSERT INTO tag (name, created_at) VALUES ('send-bench', now())",
    """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
           custom_fields, notes, created_at, updated_at)
       SELECT 'bench' || g || '@example.net', 'First' || g, 'Last' || g, 'N1 9GU', 'GB', 'subscribed',
              'import:1', '{}', '', now(), now()
       FROM generate_series(1, %(n)s) g""",
    """INSERT INTO supporter_tag (supporter_id, tag_id)
       SELECT s.id, (SELECT t.id FROM tag t WHERE t.name = 'send-bench') FROM supporter s ORDER BY s.id LIMIT %(k)s""",
    "ANALYZE",
]


class Sink:
    """smtp-sink on a free port, dumping transactions into a tmpfs directory."""

    def __init__(self, name: str):
        from crm.outbox.server import free_port

        self.dir = Path(tempfile.mkdtemp(prefix=f"crm-sink-{name}-", dir="/dev/shm"))
        self.dir.chmod(0o777)
        self.dump = self.dir / "dump"
        self.port = free_port()
        self.proc = subprocess.Popen([SINK, "-u", "nobody", "-D", str(self.dump), f"127.0.0.1:{self.port}", "1000"])
        time.sleep(0.3)

    def recipients(self) -> collections.Counter:
        counts: collections.Counter = collections.Counter()
        if self.dump.exists():
            with open(self.dump, "rb") as fh:
                for line in fh:
                    if line.startswith(b"X-Rcpt-Args:"):
                        counts[line.split(b":", 1)[1].strip().strip(b"<>").lower().decode()] += 1
        return counts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _push(port: int, message: bytes, count: int, offset: int, out) -> None:
    smtp = smtplib.SMTP("127.0.0.1", port)
    for i in range(count):
        smtp.sendmail("news@news.example.org", [f"raw{offset + i}@example.net"], message)
    smtp.quit()
    out.put(count)


def raw_limit(message: bytes, processes: int, per_process: int) -> tuple[float, collections.Counter]:
    sink = Sink("raw")
    try:
        out: multiprocessing.Queue = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=_push, args=(sink.port, message, per_process, i * per_process, out))
                   for i in range(processes)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - started
        return processes * per_process / seconds, sink.recipients()
    finally:
        sink.stop()


def run() -> list[dict]:
    if not os.path.exists(SINK) or os.geteuid() != 0:
        return [{"case": "skipped", "value": "", "unit": "",
                 "notes": "needs root and Debian's postfix (smtp-sink); see the module docstring"}]
    from sqlalchemy import func, select

    from campaigns import lifecycle, queries
    from campaigns.pipeline import Renderer
    from crm import create_app
    from crm.extensions import db
    from crm.models import Campaign, Message, Segment, SenderIdentity, Tag
    from crm.redis_conn import get_redis
    from crm.segments import compiler
    from crm.segments.rules import validate

    url = os.environ.get("BENCH_SEND_DATABASE_URL", DEFAULT_URL)
    redis_url = os.environ.get("BENCH_SEND_REDIS_URL", DEFAULT_REDIS)
    n_snapshot = int(os.environ.get("BENCH_SEND_SNAPSHOT", 1_000_000))
    n_send = int(os.environ.get("BENCH_SEND_RECIPIENTS", 100_000))
    processes = int(os.environ.get("BENCH_SEND_WORKERS", 2))
    fresh_database(url)
    instance = tempfile.mkdtemp(prefix="crm-bench-send-")
    settings = {"CRM_ENV": "production", "SECRET_KEY": "bench-secret", "DATABASE_URL": url, "REDIS_URL": redis_url,
                "BASE_URL": "https://crm.example.org", "ORG_NAME": "Bench Org",
                "ORG_POSTAL_ADDRESS": "1 Bench Street, London N1 9GU", "SEND_RATE_PER_SECOND": "1000000",
                "SMTP_MAX_CONNECTIONS": str(processes), "CRM_INSTANCE_PATH": instance}
    rows: list[dict] = []
    app = create_app({**settings, "INSTANCE_PATH": instance, "SMTP_URL": "smtp://127.0.0.1:25"})
    try:
        with app.app_context():
            from flask_migrate import upgrade

            get_redis().flushdb()
            upgrade()
            started = time.perf_counter()
            with db.engine.begin() as conn:
                for statement in GENERATE:
                    conn.exec_driver_sql(statement, {"n": n_snapshot, "k": n_send} if "%(" in statement else None)
            rows.append({"case": "generate", "value": f"{time.perf_counter() - started:.1f}", "unit": "s",
                         "notes": f"{n_snapshot:,} subscribed supporters"})
            sender = SenderIdentity(name="Bench Org", email="news@news.example.org")
            everyone = Segment(name="everyone", rules={"type": "group", "match": "all", "rules": [
                {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]}]})
            tag_id = db.session.scalar(select(Tag.id).where(Tag.name == "send-bench"))
            tagged = Segment(name="tagged", rules={"type": "group", "match": "all", "rules": [
                {"type": "condition", "field": "tags", "op": "any_of", "value": [tag_id]}]})
            db.session.add_all([sender, everyone, tagged])
            db.session.commit()

            # 1. The snapshot at full size, in its own transaction, then undone.
            big = Campaign(name="snapshot", subject="Snapshot", mjml=MJML, sender=sender, segment=everyone)
            db.session.add(big)
            db.session.commit()
            condition = compiler.segment_condition(validate(everyone.rules))
            started = time.perf_counter()
            count = queries.snapshot(big.id, condition, datetime.now(UTC))
            db.session.commit()
            rows.append({"case": "recipient snapshot", "value": f"{time.perf_counter() - started:.1f}", "unit": "s",
                         "notes": f"{count:,} message rows, one INSERT ... SELECT (target < 15 s)"})
            db.session.execute(Message.__table__.delete().where(Message.campaign_id == big.id))
            db.session.commit()

            # 2. The raw limit, with a message of the campaign's own size.
            campaign = Campaign(name="send", subject="News for {{ supporter.first_name }}", mjml=MJML,
                                sender=sender, segment=tagged)
            db.session.add(campaign)
            db.session.commit()
            person = {"email": "raw@example.net", "first_name": "Sam", "petitions": [], "custom_fields": {}}
            _, message = Renderer.for_campaign(campaign).render_message(1, person)
            per_process = max(2000, n_send // (processes * 5))
            raw_rate, raw_counts = raw_limit(message, processes, per_process)
            rows.append({"case": f"raw smtplib, {processes} connections", "value": f"{raw_rate:,.0f}", "unit": "msg/s",
                         "notes": f"{processes * per_process:,} pre-built {len(message) / 1024:.1f} KB messages; "
                                  f"sink counted {sum(raw_counts.values()):,}"})

            # 3. The pipeline: snapshot, batches, render, send, record, across worker processes.
            sink = Sink("send")
            try:
                env = {**os.environ, **settings, "SMTP_URL": f"smtp://127.0.0.1:{sink.port}"}
                env.pop("TEST_DATABASE_URL", None)
                lifecycle.send_now(campaign)
                started = time.perf_counter()
                workers = [subprocess.Popen([sys.executable, "-m", "crm.cli", "worker", "--no-scheduler"],
                                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                           for _ in range(processes)]
                # Long-running workers, as in production: a --burst worker that starts while the
                # start job is still snapshotting finds the queue empty and quits, leaving the
                # whole campaign to the other one. Stop them (warm shutdown) once it is done.
                while time.perf_counter() - started < 3600:
                    time.sleep(0.2)
                    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign.id))
                    db.session.rollback()
                    if status not in ("scheduled", "sending"):
                        break
                wall = time.perf_counter() - started
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(60)
                counts = sink.recipients()
            finally:
                sink.stop()
            db.session.expire_all()
            db.session.refresh(campaign)
            first, last = db.session.execute(
                select(func.min(Message.sent_at), func.max(Message.sent_at)).where(Message.campaign_id == campaign.id)
            ).one()
            statuses = dict(db.session.execute(select(Message.status, func.count())
                                               .where(Message.campaign_id == campaign.id)
                                               .group_by(Message.status)).all())
            expected = {f"bench{i}@example.net" for i in range(1, n_send + 1)}
            duplicates = sum(c - 1 for c in counts.values() if c > 1)
            missing = len(expected - set(counts))
            send_seconds = (last - first).total_seconds() if first and last else float("nan")
            rate = statuses.get("sent", 0) / send_seconds if send_seconds else 0
            rows += [
                {"case": f"pipeline, {processes} workers", "value": f"{rate:,.0f}", "unit": "msg/s",
                 "notes": f"first to last send; campaign {campaign.status}; statuses {statuses}"},
                {"case": "pipeline end to end", "value": f"{wall:.1f}", "unit": "s",
                 "notes": f"workers started -> campaign sent, incl. snapshot of {n_send:,} "
                          f"and {processes} interpreter starts"},
                {"case": "ratio pipeline / raw", "value": f"{rate / raw_rate:.2f}", "unit": "",
                 "notes": "target 0.6 or more"},
                {"case": "counted at the sink", "value": f"{sum(counts.values()):,}", "unit": "msgs",
                 "notes": f"{duplicates} duplicates, {missing} missing of {n_send:,}"},
            ]
    finally:
        release(app, url, instance, keep=bool(os.environ.get("BENCH_SEND_KEEP")))
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table([{"benchmark": "send", **row} for row in run()])
