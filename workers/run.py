"""Start an RQ worker (with the scheduler) whose jobs run in this process's app."""

from __future__ import annotations

from flask import Flask
from rq import Worker

from crm.redis_conn import get_redis
from workers import QUEUES, queue, set_job_app


def run_worker(app: Flask, *, burst: bool = False, with_scheduler: bool = True) -> None:
    set_job_app(app)
    connection = get_redis(app)
    worker = Worker([queue(name, app) for name in QUEUES], connection=connection)
    try:
        worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
    finally:
        # A pooled connection left open would keep an embedded redis-server alive.
        connection.connection_pool.disconnect()
