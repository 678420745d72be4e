"""One delivery attempt: resolve and check the host, POST the signed body to that address, record it.

A failed attempt raises DeliveryFailed after recording itself, so RQ retries the job on the
WEBHOOK_RETRY_SECONDS schedule (1 minute doubling, about 17 hours by default); the last
attempt marks the delivery failed. Each attempt is signed afresh with its own timestamp and
the delivery's one webhook-id, which receivers use to ignore a repeat (Standard Webhooks).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import urllib3
from flask import current_app
from rq import get_current_job

from crm import stored_secrets
from crm.extensions import db
from crm.models import WebhookDelivery, WebhookEndpoint, utcnow
from outbound import hosts, signing
from outbound.service import allow_private_hosts

log = logging.getLogger(__name__)

USER_AGENT = "SupporterCRM-Webhooks/1"
ERROR_MAX = 500


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx (or could not be reached); the delivery row says why."""


def _post(target: hosts.Target, headers: dict[str, str], body: bytes, timeout: float) -> int:
    """POST to the checked address (not the name again: DNS could answer differently now); the status."""
    default_port = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    headers = {**headers, "Host": host if target.port == default_port else f"{host}:{target.port}",
               "Content-Type": "application/json", "User-Agent": USER_AGENT}
    limits = urllib3.Timeout(connect=timeout, read=timeout)
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, timeout=limits, retries=False, maxsize=1,
                                           server_hostname=target.host, assert_hostname=target.host,
                                           cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=limits, retries=False, maxsize=1)
    try:
        response = pool.urlopen("POST", target.path, body=body, headers=headers, redirect=False, retries=False,
                                preload_content=False)
        response.read(4096)  # what the receiver said is not kept: it could be anything, of any size
        response.release_conn()
        return response.status
    finally:
        pool.close()


def deliver(delivery_id: int) -> str:
    """Attempt the delivery once; returns its status, or raises DeliveryFailed after recording the failure."""
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.status == "delivered":
        return delivery.status if delivery else "gone"
    endpoint = db.session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None or not endpoint.is_active:
        delivery.status, delivery.error, delivery.next_attempt_at = "failed", "The endpoint is switched off.", None
        db.session.commit()
        return delivery.status
    secret = stored_secrets.decrypt(endpoint.secret)
    now = int(time.time())
    body = delivery.body.encode("utf-8")
    delivery.attempts += 1
    delivery.last_attempt_at = utcnow()
    status, error = None, ""
    if not secret:
        error = "The endpoint's secret cannot be read (SECRET_KEY changed?); rotate it in Settings."
    else:
        try:
            target = hosts.resolve(endpoint.url, allow_private_hosts())
            status = _post(target, signing.headers(secret, delivery.webhook_id, now, body), body,
                           float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]))
        except hosts.Refused as exc:
            error = str(exc)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            error = f"Could not reach the receiver ({type(exc).__name__})."
    delivery.response_status = status
    if status is not None and 200 <= status < 300:
        delivery.status, delivery.error = "delivered", ""
        delivery.delivered_at, delivery.next_attempt_at = utcnow(), None
        db.session.commit()
        return delivery.status
    delivery.error = (error or f"The receiver answered {status}.")[:ERROR_MAX]
    job = get_current_job()
    retries_left = (job.retries_left or 0) if job is not None else 0
    schedule = current_app.config["WEBHOOK_RETRY_SECONDS"]
    if retries_left > 0 and schedule:
        wait = schedule[max(len(schedule) - retries_left, 0)]
        delivery.status, delivery.next_attempt_at = "retrying", utcnow() + timedelta(seconds=wait)
    else:
        delivery.status, delivery.next_attempt_at = "failed", None
    db.session.commit()
    log.info("webhook delivery %s to endpoint %s: attempt %s failed (%s)", delivery.id, endpoint.id,
             delivery.attempts, status or "no answer")
    raise DeliveryFailed(f"webhook delivery {delivery.id}: {delivery.error}")
