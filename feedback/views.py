"""/hooks/<provider>: the relays' webhooks. Machines POST here with no session or CSRF token, so
the blueprint is exempt from the CSRF check (like the RFC 8058 one-click endpoint); each provider
module authenticates its requests its own documented way instead.

The request parses and authenticates, then hands what it carried to the intake
(feedback/intake.py: accept): deliveries that name their message go to a Redis stream for the
workers to stamp (feedback/deliveries.py; stamped here if Redis is away), and the rest is
written in one durable multi-row INSERT into feedback_intake, unique per provider and event id,
before the provider is answered 200. A worker applies the intake with apply_feedback(),
complaints first (the request enqueues the job; every worker also sweeps it periodically), so a
`crm worker` must run for bounces and complaints to take effect: with a free worker and a short
intake, within about a second of the request (a burst of thousands takes longer; the list-health
page counts what waits). A complaint stops a campaign that is sending now: its commit is
announced to the sending batches, which re-check consent before every message, so they skip the
person from the moment it is applied, about a second after the request. The answer says what
was accepted (received, queued, duplicates: already waiting or already applied), not what
applying it did.

Anything unauthenticated, replayed, too old, oversized or malformed gets a 4xx and changes
nothing; a provider that is not enabled gets 404. No body can cause a 500: parsers raise only
Rejected, and anything else they raise is answered 400 and logged. A database or Redis outage
answers 503, which every provider retries. Logs name providers and event ids, never addresses.
"""

from __future__ import annotations

import hashlib
import logging
import time

from flask import Blueprint, current_app, jsonify, request
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

from crm.auth.permissions import public
from crm.extensions import csrf, db
from crm.input_guard import reads_raw_body
from feedback.intake import accept
from feedback.providers import Incoming, generic, mailgun, postmark, sendgrid, ses
from feedback.settings import provider_settings
from feedback.types import Rejected

log = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__, url_prefix="/hooks")
PARSERS = {"ses": ses.parse, "postmark": postmark.parse, "sendgrid": sendgrid.parse,
           "mailgun": mailgun.parse, "generic": generic.parse}


def remember_nonce(scope: str, value: str, seconds: int) -> bool:
    """True the first time (scope, value) is seen within `seconds`, across every web process."""
    from crm.redis_conn import get_redis

    key = f"crm:hooks:nonce:{scope}:{hashlib.sha256(value.encode('utf-8')).hexdigest()}"
    return bool(get_redis().set(key, "1", nx=True, ex=max(1, seconds)))


def _answer(status: int, **body):
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _body(limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, "the body is too large")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise Rejected(413, "the body is too large")
    return data


@bp.route("/<provider>", methods=["POST"])
@public
@csrf.exempt
@reads_raw_body
def receive(provider: str):
    parse = PARSERS.get(provider)
    if parse is None:
        return _answer(404, error="unknown provider")
    config = current_app.config
    try:
        settings = provider_settings(provider)
        if not settings.enabled:
            return _answer(404, error=f"{provider} webhooks are not enabled in Settings")
        auth = request.authorization
        incoming = Incoming(
            body=_body(int(config["FEEDBACK_MAX_BODY_BYTES"])), headers=request.headers,
            remote_addr=request.remote_addr,
            basic_auth=(auth.username or "", auth.password or "") if auth and auth.type == "basic" else None,
            now=time.time(), max_age=float(config["FEEDBACK_MAX_AGE_SECONDS"]), remember_nonce=remember_nonce,
            config=config)
        parsed = parse(incoming, settings)
        accepted = accept(parsed.feedback)
    except Rejected as exc:
        db.session.rollback()
        log.info("hooks/%s refused (%s): %s", provider, exc.status, exc.reason)
        return _answer(exc.status, error=exc.reason)
    except (SQLAlchemyError, RedisError) as exc:
        db.session.rollback()
        log.error("hooks/%s: %s; the provider will retry", provider, type(exc).__name__)
        return _answer(503, error="temporarily unavailable, try again")
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        # A parser bug met a body it did not expect: refuse it (the provider's retry will not
        # fix it), say so in the log, and never answer 500.
        db.session.rollback()
        log.exception("hooks/%s: could not read a request (%s)", provider, type(exc).__name__)
        return _answer(400, error="the request could not be read")
    return _answer(200, ok=True, received=accepted.received, queued=accepted.queued,
                   duplicates=accepted.duplicates, **({"note": parsed.note} if parsed.note else {}))
