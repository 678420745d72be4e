"""The job queues: their names, declared once, and how the domain puts work on them.

Code in crm/ and campaigns/ enqueues here and never imports workers/. The job functions live
in workers/, which sits on top of the domain and calls into it; so the domain names a job by
its dotted path, which RQ resolves when a worker runs it. Every such path is listed once below,
and a test checks that each resolves to a function (a typo fails the suite, not a send).
"""

from __future__ import annotations

from flask import Flask, current_app
from rq import Queue

QUEUES = ("default", "mail")  # workers listen on all of them, in this order

START_CAMPAIGN = "workers.campaigns.start_campaign_job"
SEND_BATCH = "workers.campaigns.send_batch_job"
SEND_TEST = "workers.campaigns.send_test_job"
RUN_IMPORT = "workers.imports.run_import"
SEND_TEST_MESSAGE = "workers.jobs.send_test_message"
FETCH_BOUNCES = "workers.feedback.fetch_bounces_job"
APPLY_FEEDBACK = "workers.feedback.apply_intake_job"
SEND_CONFIRMATION = "workers.petitions.send_confirmation_job"
RUN_EXPORT = "workers.exports.run_export"
DISPATCH_WEBHOOKS = "workers.outbound.dispatch_webhooks_job"
DELIVER_WEBHOOK = "workers.outbound.deliver_webhook_job"
RECOUNT_PEOPLE = "workers.api.recount_people_job"
BUILD_PEOPLE_RANKS = "workers.api.build_people_ranks_job"
JOBS = (START_CAMPAIGN, SEND_BATCH, SEND_TEST, RUN_IMPORT, SEND_TEST_MESSAGE, FETCH_BOUNCES, APPLY_FEEDBACK,
        SEND_CONFIRMATION, RUN_EXPORT, DISPATCH_WEBHOOKS, DELIVER_WEBHOOK, RECOUNT_PEOPLE, BUILD_PEOPLE_RANKS)


def queue(name: str = "default", app: Flask | None = None) -> Queue:
    """The named queue on the app's Redis."""
    from crm.redis_conn import get_redis

    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=get_redis(app or current_app))


def enqueue(job: str, *args, queue_name: str = "default", **kwargs):
    """Put the job named `job` (one of JOBS), called with `args`, on a queue of the current app."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}")
    return queue(queue_name).enqueue(job, *args, **kwargs)
