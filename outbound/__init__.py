r"""Outbound webhooks: events sent, signed, to URLs admins registered, retried for hours, logged.

    fact committed (crm.events.emit) --> RPUSH to a Redis list (the request's only cost)
                                    \--> one dispatch job at a time (a flag key, SET NX)
    dispatch job: pop events, one webhook_delivery row per subscribed endpoint, one delivery job each
    delivery job: check the URL's host again, POST the signed body, record the attempt; fail -> RQ retries

A dead or slow receiver costs the signing or sending path nothing: the request only pushes to
Redis, and the attempts run in workers with a timeout. Events no endpoint subscribes to are not
even pushed (each process knows which event types are wanted, for two seconds at a time).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Hear every committed event of `app` (crm/events.py)."""
    from crm import events
    from outbound import dispatch

    events.add_sink(app, dispatch.push)
