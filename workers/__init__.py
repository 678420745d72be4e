"""RQ job functions and the worker that runs them; the app those functions run in.

Job functions take ids or plain values, open their own app context and raise on failure. The
domain enqueues them by name through crm/queues.py, so nothing below workers/ imports this
package.
"""

from __future__ import annotations

from flask import Flask

from crm.queues import QUEUES, queue

__all__ = ["QUEUES", "job_app", "queue", "set_job_app"]

_job_app: Flask | None = None


def job_app() -> Flask:
    """The app a job runs in: the worker's own, or one built from the environment once."""
    global _job_app
    if _job_app is None:
        from crm import create_app

        _job_app = create_app()
    return _job_app


def set_job_app(app: Flask | None) -> None:
    """Let a worker (or a test) say which app its jobs run in."""
    global _job_app
    _job_app = app
