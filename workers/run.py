"""Start an RQ worker whose jobs run in this process's app, and which runs the periodic tasks."""

from __future__ import annotations

from flask import Flask
from rq import SimpleWorker, Worker

from crm.extensions import db
from crm.logs import safe_traceback
from crm.redis_conn import get_redis
from workers import QUEUES, queue, set_job_app
from workers.periodic import TICK_SECONDS, run_due

# RQ's own maintenance (registry cleanup, taking over a dead worker's scheduler lock) every
# minute instead of every ten.
RQ_MAINTENANCE_SECONDS = 60


class PeriodicTasks:
    """Mixed into RQ's workers: between jobs, and every TICK_SECONDS while idle, run the periodic
    tasks that are due (workers/periodic.py), then RQ's own maintenance when that is due.

    Also: a failed job's traceback, which RQ logs and keeps in Redis with the job's result,
    carries no supporter data. RQ formats it itself, so a database error's message (PostgreSQL's
    DETAIL quotes the row) would pass crm/logs.py's record factory as plain text; here it is
    formatted with crm.logs.safe_traceback instead, for the log and for the stored result."""

    app: Flask
    _safe_failure: str | None = None

    def handle_exception(self, job, *exc_info) -> None:
        self._safe_failure = safe_traceback(exc_info[1]) if exc_info[1] is not None else None
        self.log.error("Worker %s: job %s: exception raised while executing (%s)\n%s", self.name, job.id,
                       job.func_name, self._safe_failure)
        for handler in self._exc_handlers:  # as RQ does: a handler returning False ends the chain
            if handler(job, *exc_info) is False:
                break

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="") -> None:
        safe, self._safe_failure = self._safe_failure, None
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                   exc_string=safe if safe is not None else exc_string)

    @property
    def dequeue_timeout(self) -> int:
        return TICK_SECONDS  # an idle worker comes back from waiting for a job this often

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return True  # run_maintenance_tasks decides what is due

    def run_maintenance_tasks(self) -> None:
        run_due(self.app, self.connection, self.name)
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()


class ForkingWorker(PeriodicTasks, Worker):
    """RQ's worker, which forks a work horse per job; the horse opens database connections of its own.

    A forked process must not use the connections it inherited: the socket would be shared with
    the parent (and with every earlier horse), and psycopg's prepared statements would clash
    ("prepared statement _pg3_0 already exists" in the second job that repeats a query).
    dispose(close=False) forgets them in the horse without closing them for the parent
    (SQLAlchemy's advice for multiprocessing). Redis's pool notices the fork by itself.
    """

    def main_work_horse(self, job, queue):
        with self.app.app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)
        super().main_work_horse(job, queue)


class InProcessWorker(PeriodicTasks, SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process), with the periodic tasks."""


def run_worker(app: Flask, *, burst: bool = False, with_scheduler: bool = True) -> None:
    set_job_app(app)
    connection = get_redis(app)
    # A long-running worker forks a work horse per job, so a job that crashes cannot take it
    # down; a burst run (tests, a one-off drain from the CLI) runs its jobs in this process.
    worker_class = InProcessWorker if burst else ForkingWorker
    worker = worker_class([queue(name, app) for name in QUEUES], connection=connection,
                          maintenance_interval=RQ_MAINTENANCE_SECONDS)
    worker.app = app
    try:
        worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
    finally:
        # A pooled connection left open would keep an embedded redis-server alive.
        connection.connection_pool.disconnect()
