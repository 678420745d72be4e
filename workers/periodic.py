"""Periodic tasks, declared here as data and run by the workers themselves between jobs.

Every `crm worker` checks about once a second whether a task is due, and runs it if it is the
first to claim that interval (one Redis key per task, set with NX and the interval as its
expiry): across any number of workers each task runs about once per interval, and it keeps
running as long as one worker is alive and free, with no single scheduler to depend on.

Why not RQ's scheduler (an earlier design put the sweep there, as delayed jobs): it runs in
one worker at a time under a lock that outlives a SIGKILLed worker by a minute (its TTL is the
scheduler interval plus 60 s), and the other workers try to take the lock over only at their
maintenance interval, every ten minutes. A campaign whose worker was killed, together with the
scheduler it ran, stayed `sending` for minutes: its sweeps waited in RQ's scheduled registry
for a scheduler that no worker was allowed to become.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from redis import Redis

from crm.extensions import db

log = logging.getLogger(__name__)

TICK_SECONDS = 1  # how long an idle worker waits for a job before checking the tasks again


@dataclass(frozen=True)
class Periodic:
    """A task, how often it runs (seconds, read from the app's settings), and what it calls."""

    name: str
    every: Callable[[dict], float]
    run: Callable[[], object]


def _sweep_campaigns() -> object:
    from campaigns.lifecycle import sweep_active

    return sweep_active()


def _start_due_campaigns() -> object:
    from campaigns.lifecycle import start_due

    return start_due()


def _fetch_bounce_mailbox() -> object:
    from flask import current_app

    from feedback.mailbox import fetch

    if not current_app.config.get("BOUNCE_MAILBOX_URL"):
        return None
    return fetch()


def _apply_feedback_intake() -> object:
    from feedback.intake import apply_waiting, between_batches

    # Bounded like the tracking flush; the queued job (feedback/intake.py) does the bulk of it.
    # Streamed deliveries are stamped between the batches: the worker runs no other task meanwhile.
    return apply_waiting(max_batches=20, between=between_batches)


def _flush_deliveries() -> object:
    from feedback.deliveries import flush

    # Bounded like the tracking flush (a batch is 5,000 deliveries); the kick job takes them too.
    return flush(max_batches=20)


def _refresh_reports() -> object:
    from reports.rollups import refresh

    return refresh()


def _pick_ab_winners() -> object:
    from campaigns.variants import pick_due_winners

    return pick_due_winners()


def _expire_exports() -> object:
    from reports.exports import expire_old

    return expire_old()


def _dispatch_webhooks() -> object:
    from outbound.dispatch import dispatch

    return dispatch()


def _build_people_ranks() -> object:
    from api.queries import build_ranks
    from crm.models import ApiKey

    active = db.session.scalar(db.select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1))
    db.session.rollback()  # build_ranks reads in a transaction of its own (one snapshot)
    return build_ranks().total if active is not None else None  # no key: nobody can call the API


def _mailbox_interval(config: dict) -> float:
    # Unconfigured, the task only checks the setting again now and then.
    return float(config["BOUNCE_MAILBOX_INTERVAL_SECONDS"]) if config.get("BOUNCE_MAILBOX_URL") else 60.0


def _flush_tracking() -> object:
    from tracking.flush import flush

    # Bounded, so a worker under a stream that never empties still gets back to its jobs; the
    # next interval (any worker) takes the rest.
    return flush(max_batches=20)


def _remind_and_expire_confirmations() -> object:
    from crm.petitions.confirmation import remind_and_expire

    return remind_and_expire()


PERIODIC = (
    # Recovery from dead batches: within SEND_HEARTBEAT_SECONDS plus one interval of a death.
    Periodic("sweep-campaigns", lambda config: float(config["SEND_SWEEP_SECONDS"]), _sweep_campaigns),
    # Scheduled campaigns start within about a second of their time.
    Periodic("start-due-campaigns", lambda config: 1.0, _start_due_campaigns),
    # Webhook feedback the queued job missed (a lost job, Redis away when the request came).
    Periodic("apply-feedback-intake", lambda config: float(config["FEEDBACK_INTAKE_SWEEP_SECONDS"]),
             _apply_feedback_intake),
    # Relays' delivery receipts streamed by the webhooks (feedback/deliveries.py) reach message.delivered_at.
    Periodic("flush-feedback-deliveries", lambda config: float(config["FEEDBACK_INTAKE_SWEEP_SECONDS"]),
             _flush_deliveries),
    # The bounce mailbox, every few minutes when BOUNCE_MAILBOX_URL is set.
    Periodic("fetch-bounce-mailbox", _mailbox_interval, _fetch_bounce_mailbox),
    # Opens and clicks recorded in Redis reach engagement_event (and the segments) within seconds.
    Periodic("flush-tracking", lambda config: float(config["TRACKING_FLUSH_SECONDS"]), _flush_tracking),
    # Double opt-in: the one reminder and the expiry, checked every few minutes.
    Periodic("remind-expire-confirmations", lambda config: 300.0, _remind_and_expire_confirmations),
    # The report roll-ups: incremental, so a refresh costs what changed since the last one.
    Periodic("refresh-reports", lambda config: float(config["REPORTS_REFRESH_SECONDS"]), _refresh_reports),
    # A/B tests whose wait is over: the winner (or the default) goes to the rest of the segment.
    Periodic("pick-ab-winners", lambda config: float(config["AB_CHECK_SECONDS"]), _pick_ab_winners),
    # Outbound events whose dispatch job was never queued (Redis was down when they were
    # committed), and deliveries whose dispatch job died before queueing them.
    Periodic("dispatch-webhooks", lambda config: 60.0, _dispatch_webhooks),
    # The API's rank index of people (api/queries.py), so a sync's first page never waits for a
    # count of every match; while the API is in use its requests also have it rebuilt sooner.
    Periodic("build-people-ranks", lambda config: 600.0, _build_people_ranks),
    # Worker-built export files past EXPORT_KEEP_DAYS.
    Periodic("expire-exports", lambda config: 3600.0, _expire_exports),
)


def run_due(app: Flask, redis: Redis, worker_name: str, tasks: tuple[Periodic, ...] = PERIODIC) -> list[str]:
    """Run each task whose interval no worker has claimed yet; returns the names of those run."""
    ran = []
    for task in tasks:
        interval_ms = max(1, int(task.every(app.config) * 1000))
        if not redis.set(f"crm:periodic:{task.name}", worker_name, nx=True, px=interval_ms):
            continue
        with app.app_context():
            try:
                task.run()
                ran.append(task.name)
            except Exception:
                # A supervisor loop, not a job: the worker must outlive a failing task (the
                # next interval tries again), so the failure is logged with its traceback.
                log.exception("periodic task %s failed", task.name)
            finally:
                db.session.remove()
    return ran
