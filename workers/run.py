"""Start an RQ worker (with the scheduler) whose jobs run in this process's app."""

from __future__ import annotations

from flask import Flask
from rq import SimpleWorker, Worker

from crm.redis_conn import get_redis
from workers import QUEUES, queue, set_job_app


def run_worker(app: Flask, *, burst: bool = False, with_scheduler: bool = True) -> None:
    set_job_app(app)
    connection = get_redis(app)
    # A long-running worker forks a work horse per job, so a job that crashes cannot take it
    # down; a burst run (tests, a one-off drain from the CLI) runs its jobs in this process.
    worker_class = SimpleWorker if burst else Worker
    worker = worker_class([queue(name, app) for name in QUEUES], connection=connection)
    with app.app_context():
        from campaigns.lifecycle import recover

        recover()  # an embedded Redis forgets scheduled starts when it stops
    try:
        worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
    finally:
        # A pooled connection left open would keep an embedded redis-server alive.
        connection.connection_pool.disconnect()
