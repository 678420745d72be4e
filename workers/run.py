"""Start an RQ worker (with the scheduler) whose jobs run in this process's app."""

from __future__ import annotations

from flask import Flask
from rq import SimpleWorker, Worker

from crm.extensions import db
from crm.redis_conn import get_redis
from workers import QUEUES, queue, set_job_app


class ForkingWorker(Worker):
    """RQ's worker, which forks a work horse per job; the horse opens database connections of its own.

    A forked process must not use the connections it inherited: the socket would be shared with
    the parent (and with every earlier horse), and psycopg's prepared statements would clash
    ("prepared statement _pg3_0 already exists" in the second job that repeats a query).
    dispose(close=False) forgets them in the horse without closing them for the parent
    (SQLAlchemy's advice for multiprocessing). Redis's pool notices the fork by itself.
    """

    app: Flask

    def main_work_horse(self, job, queue):
        with self.app.app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)
        super().main_work_horse(job, queue)


def run_worker(app: Flask, *, burst: bool = False, with_scheduler: bool = True) -> None:
    set_job_app(app)
    connection = get_redis(app)
    # A long-running worker forks a work horse per job, so a job that crashes cannot take it
    # down; a burst run (tests, a one-off drain from the CLI) runs its jobs in this process.
    worker_class = SimpleWorker if burst else ForkingWorker
    worker = worker_class([queue(name, app) for name in QUEUES], connection=connection)
    worker.app = app
    with app.app_context():
        from campaigns.lifecycle import recover

        recover()  # an embedded Redis forgets scheduled starts when it stops
    try:
        worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
    finally:
        # A pooled connection left open would keep an embedded redis-server alive.
        connection.connection_pool.disconnect()
