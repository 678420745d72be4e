"""Crash recovery with real `crm worker` processes: the worker holding RQ's scheduler is killed
(its whole process group: worker, work horse, scheduler) in the middle of the campaign's only
batch, a replacement starts, and the campaign still reaches `sent` with every row accounted for.

Nothing but the workers themselves runs here: no sweep is called by the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaigns import lifecycle
from crm.extensions import db
from crm.models import Campaign, Message, Segment
from crm.redis_conn import get_redis
from tests import factories

ROOT = Path(__file__).resolve().parents[1]
SUPPORTERS = 300
CHUNK = 10
EVERYONE = {"type": "group", "match": "all", "rules": [
    {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]}]}


def _wait(condition, seconds: float, what: str, processes=()) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for proc in processes:
            assert proc.poll() is None, f"a worker exited early while waiting until {what}"
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _kill(worker: subprocess.Popen, horse_only: bool) -> None:
    """SIGKILL the worker's work horse (RQ puts it in a session of its own) and, unless
    `horse_only`, the worker's own process group (it and its scheduler)."""
    horses = [c for c in _children(worker.pid) if os.getpgid(c) == c]
    assert horses, "the worker was not running a batch"
    for horse in horses:
        os.killpg(horse, signal.SIGKILL)
    if not horse_only:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


def _campaign_status(campaign_id: int) -> str:
    db.session.rollback()  # a fresh read of what the workers wrote
    return db.session.scalar(db.select(Campaign.status).where(Campaign.id == campaign_id))


def _statuses(campaign_id: int) -> dict[str, int]:
    db.session.rollback()  # a fresh read of what the workers wrote
    return dict(db.session.execute(db.select(Message.status, db.func.count())
                                   .where(Message.campaign_id == campaign_id).group_by(Message.status)).all())


@pytest.fixture
def worker_env(database_url, redis_url, smtp_server, tmp_path):
    return {**os.environ, "CRM_ENV": "testing", "SECRET_KEY": "test-secret-key", "DATABASE_URL": database_url,
            "REDIS_URL": redis_url, "SMTP_URL": smtp_server.url, "BASE_URL": "https://crm.example.org",
            "ORG_NAME": "Test Org", "ORG_POSTAL_ADDRESS": "1 Test Street, London N1 1AA",
            "CRM_INSTANCE_PATH": str(tmp_path / "instance"), "SEND_CHUNK_SIZE": str(CHUNK),
            "SEND_FLUSH_EVERY": str(CHUNK), "SEND_BATCH_SIZE": str(SUPPORTERS), "SEND_RATE_PER_SECOND": "100",
            "SEND_HEARTBEAT_SECONDS": "2", "SEND_SWEEP_SECONDS": "1"}


@pytest.mark.parametrize("horse_only", [False, True], ids=["worker-and-horse", "horse-only"])
def test_killing_the_worker_that_holds_the_scheduler_mid_batch_still_finishes(make_app, smtp_server, worker_env,
                                                                             horse_only):
    """SIGKILL the work horse of the worker that runs both RQ's scheduler and the only batch (and
    the worker itself), start a replacement: the dead batch's claimed rows become `unknown`, the
    rest are sent by the survivors, nobody gets two, and the campaign ends `sent`."""
    app = make_app(SMTP_URL=smtp_server.url)
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "crm.cli", "worker"], env=worker_env, cwd=ROOT,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers.append(proc)
        return proc

    with app.app_context():
        people = [factories.make_supporter() for _ in range(SUPPORTERS)]
        seg = Segment(name="Everyone", rules=EVERYONE)
        db.session.add(seg)
        db.session.commit()
        campaign = factories.make_campaign(segment=seg)
        campaign_id = campaign.id
        redis = get_redis()
        try:
            first = start_worker()  # alone, so it takes RQ's scheduler locks and then the batch
            _wait(lambda: redis.exists("rq:scheduler-lock:mail"), 30, "the first worker runs the scheduler",
                  [first])
            lifecycle.send_now(campaign)
            _wait(lambda: len(smtp_server.handler.envelopes) >= 40, 60, "the batch is sending", [first])
            survivor = start_worker()
            time.sleep(0.5)
            _kill(first, horse_only)
            killed_at = len(smtp_server.handler.envelopes)
            assert killed_at < SUPPORTERS, "the batch finished before it could be killed"
            replacement = start_worker()

            _wait(lambda: _campaign_status(campaign_id) == "sent", 90, "the campaign is sent",
                  [survivor, replacement] + ([first] if horse_only else []))
        finally:
            for proc in workers:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

        received = smtp_server.handler.recipients()
        assert len(received) == len(set(received)), "somebody was mailed twice"
        counts = _statuses(campaign_id)
        assert set(counts) <= {"sent", "unknown"}
        assert counts["sent"] + counts.get("unknown", 0) == SUPPORTERS
        assert counts.get("unknown", 0) <= CHUNK  # at most the chunk in flight when it died
        rows = db.session.execute(db.select(Message.email, Message.status).where(Message.campaign_id == campaign_id))
        by_status: dict[str, set[str]] = {}
        for address, status in rows:
            by_status.setdefault(status, set()).add(address)
        assert by_status["sent"] <= set(received)
        assert by_status.get("unknown", set()).isdisjoint(received[killed_at + 1:]), "an unknown row was resent"
        assert set(received) | by_status.get("unknown", set()) == {p.email for p in people}
