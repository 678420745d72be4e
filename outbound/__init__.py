r"""Outbound webhooks: events sent, signed, to URLs admins registered, retried for hours, logged.

    fact (crm.events.emit) --> an outbound_event row in the fact's own transaction (the outbox)
         after the commit \--> one dispatch job at a time (a flag key, SET NX; and every minute)
    dispatch job: take outbox rows, one webhook_delivery row per subscribed endpoint, deleting the
                  outbox rows in the same transaction; then one delivery job each
    delivery job: check the URL's host again, POST the signed body, record the attempt; fail -> RQ retries

A dead or slow receiver costs the signing or sending path nothing: the request writes one more
row and sets a Redis key, and the attempts run in workers with a timeout. Events no endpoint
subscribes to are not even stored (each process knows which event types are wanted, for two
seconds at a time). A dispatch job that dies loses nothing: its outbox rows are deleted only
with the deliveries made from them, and deliveries it made but did not queue are queued by the
next one.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Hear every committed event of `app` (crm/events.py)."""
    from crm import events
    from outbound import dispatch

    events.set_listener(app, dispatch.wanted_types, dispatch.wake)
