"""Amazon SES notifications delivered by Amazon SNS over HTTPS.

Authentication (SNS "Verifying the signatures of Amazon SNS messages"): the message is signed
over a canonical string of its fields, in a fixed order per message type, each as
"Name\\nvalue\\n"; SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA. The key is the X.509
certificate at SigningCertURL, fetched only over https from a host in SNS_ALLOWED_HOSTS
(sns.<region>.amazonaws.com by default) and cached per process by URL. The signed Timestamp
must be within FEEDBACK_MAX_AGE_SECONDS. An admin may also restrict the topic ARNs.

SubscriptionConfirmation is confirmed by fetching its SubscribeURL, again only from an allowed
SNS host. A Notification carries the SES notification as a JSON string in Message:
notificationType (or eventType, for event publishing) Bounce, Complaint or Delivery, with the
original headers in mail.headers when "include original headers" is on (X-Message-Ref is read
from there; SES rewrites Message-ID, so ours is in mail.commonHeaders.messageId).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import logging
import ssl
import threading
import urllib.request
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from feedback.providers import (
    Incoming,
    Parsed,
    ProviderSettings,
    check_fresh,
    header_value,
    iso_time,
    items,
    load_json,
    obj,
    text,
)
from feedback.types import Feedback, Rejected, enhanced_status, normalised_address, scrub

log = logging.getLogger(__name__)

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
CERT_MAX_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0
CACHE_MAX = 32

_certificates: dict[str, rsa.RSAPublicKey] = {}
_lock = threading.Lock()


def parse(incoming: Incoming, settings: ProviderSettings) -> Parsed:
    doc = load_json(incoming.body)
    kind = text(doc, "Type")
    if not isinstance(doc, dict) or kind not in TYPES:
        raise Rejected(400, "not an Amazon SNS message (is raw message delivery on? turn it off)")
    announced = incoming.headers.get("x-amz-sns-message-type")
    if announced and announced != kind:
        raise Rejected(400, "the message type does not match x-amz-sns-message-type")
    topics = [t for t in settings.options.get("topic_arns") or [] if t]
    if topics and text(doc, "TopicArn") not in topics:
        raise Rejected(403, "this topic is not one the settings allow")
    verify(doc, kind, incoming)
    timestamp = iso_time(text(doc, "Timestamp"))
    if timestamp is None:
        raise Rejected(400, "the message has no valid Timestamp")
    check_fresh(timestamp.timestamp(), incoming)
    if kind == "SubscriptionConfirmation":
        if settings.options.get("auto_confirm", True) is False:
            log.warning("SNS subscription to %s not confirmed: automatic confirmation is off",
                        text(doc, "TopicArn"))
            return Parsed(note="subscription not confirmed (automatic confirmation is off)")
        confirm_subscription(text(doc, "SubscribeURL"), incoming)
        log.info("confirmed the SNS subscription to %s", text(doc, "TopicArn"))
        return Parsed(note="subscription confirmed")
    if kind == "UnsubscribeConfirmation":
        log.warning("SNS says the subscription to %s was removed", text(doc, "TopicArn"))
        return Parsed(note="unsubscribe noted")
    try:
        notification = json.loads(text(doc, "Message", limit=1_000_000))
    except (ValueError, RecursionError):
        raise Rejected(400, "the SNS Message is not an SES notification") from None
    return Parsed(ses_feedback(notification, text(doc, "MessageId")))


def ses_feedback(notification, sns_message_id: str) -> list[Feedback]:
    """Feedback values for one SES notification (bounce, complaint, delivery or delay)."""
    if not isinstance(notification, dict):
        raise Rejected(400, "the SNS Message is not an SES notification")
    kind = text(notification, "notificationType") or text(notification, "eventType")
    mail = obj(notification, "mail")
    headers = items(mail, "headers")
    ref = header_value(headers, "x-message-ref") or None
    message_id = text(obj(mail, "commonHeaders"), "messageId") or header_value(headers, "message-id") or None
    base = {"provider": "ses", "message_ref": ref, "message_id": message_id}
    out: list[Feedback] = []
    if kind == "Bounce":
        bounce = obj(notification, "bounce")
        bounce_type = text(bounce, "bounceType")
        key = text(bounce, "feedbackId") or sns_message_id
        for recipient in items(bounce, "bouncedRecipients"):
            address = normalised_address(text(recipient, "emailAddress"))
            if address is None:
                continue
            status = text(recipient, "status") or enhanced_status(text(recipient, "diagnosticCode"))
            detail = text(recipient, "diagnosticCode") or f"{bounce_type} / {text(bounce, 'bounceSubType')}"
            out.append(Feedback(**base, kind="bounce", event_id=f"{key}:{address}", address=address,
                                hard=bounce_type == "Permanent", status=status[:20], detail=scrub(detail),
                                occurred_at=iso_time(text(bounce, "timestamp"))))
    elif kind == "Complaint":
        complaint = obj(notification, "complaint")
        feedback_type = text(complaint, "complaintFeedbackType")
        if feedback_type == "not-spam":
            return []  # the recipient says it is not spam: nothing to withdraw
        key = text(complaint, "feedbackId") or sns_message_id
        for recipient in items(complaint, "complainedRecipients"):
            address = normalised_address(text(recipient, "emailAddress"))
            if address is not None:
                out.append(Feedback(**base, kind="complaint", event_id=f"{key}:{address}", address=address,
                                    detail=scrub(feedback_type or "complaint"),
                                    occurred_at=iso_time(text(complaint, "timestamp"))))
    elif kind == "Delivery":
        delivery = obj(notification, "delivery")
        for raw in items(delivery, "recipients"):
            address = normalised_address(raw)
            if address is not None:
                out.append(Feedback(**base, kind="delivery", event_id=f"{sns_message_id}:{address}",
                                    address=address, occurred_at=iso_time(text(delivery, "timestamp"))))
    elif kind == "DeliveryDelay":
        out.append(Feedback(**base, kind="delay", event_id=sns_message_id))
    return out


# -- signatures -------------------------------------------------------------------------------

def canonical_string(doc: dict, kind: str) -> bytes:
    fields = NOTIFICATION_FIELDS if kind == "Notification" else SUBSCRIPTION_FIELDS
    parts = []
    for name in fields:
        value = doc.get(name)
        if value is None and name == "Subject":
            continue  # optional, and left out of the string when absent
        if not isinstance(value, str):
            raise Rejected(400, f"the message has no {name}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def verify(doc: dict, kind: str, incoming: Incoming) -> None:
    version = text(doc, "SignatureVersion")
    if version not in ("1", "2"):
        raise Rejected(400, "unsupported SignatureVersion")
    try:
        signature = base64.b64decode(text(doc, "Signature", limit=4096), validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(400, "the Signature is not base64") from None
    key = signing_key(text(doc, "SigningCertURL"), incoming)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1 is SHA1withRSA
    try:
        key.verify(signature, canonical_string(doc, kind), padding.PKCS1v15(), digest)
    except InvalidSignature:
        raise Rejected(403, "the SNS signature does not verify") from None


def allowed_sns_url(url: str, config) -> bool:
    """Whether the URL is https on a host (and port) SNS_ALLOWED_HOSTS lists."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or not host or parts.username or parts.password:
        return False
    where = host if port in (None, 443) else f"{host}:{port}"
    for pattern in str(config.get("SNS_ALLOWED_HOSTS") or "").split(","):
        pattern = pattern.strip().lower()
        # "*" stands for one DNS label, so sns.*.amazonaws.com never matches sns.evil.com.x.amazonaws.com
        if pattern and fnmatch.fnmatchcase(where, pattern) and where.count(".") == pattern.count("."):
            return True
    return False


def _fetch(url: str, incoming: Incoming) -> bytes:
    context = ssl.create_default_context()
    ca_file = incoming.config.get("SNS_CA_FILE")
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    # No redirects: a redirect could leave the allowed hosts.
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "crm-sns"}),
                         timeout=FETCH_TIMEOUT) as response:
            data = response.read(CERT_MAX_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise Rejected(400, f"could not fetch from SNS ({type(exc).__name__})") from None
    if len(data) > CERT_MAX_BYTES:
        raise Rejected(400, "the SNS answer is too large")
    return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def signing_key(url: str, incoming: Incoming) -> rsa.RSAPublicKey:
    if not url.endswith(".pem") or not allowed_sns_url(url, incoming.config):
        raise Rejected(403, "SigningCertURL is not an https URL on an Amazon SNS host")
    with _lock:
        key = _certificates.get(url)
    if key is not None:
        return key
    try:
        certificate = x509.load_pem_x509_certificate(_fetch(url, incoming))
    except ValueError:
        raise Rejected(400, "SigningCertURL does not hold a certificate") from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(400, "the SNS certificate does not hold an RSA key")
    with _lock:
        if len(_certificates) >= CACHE_MAX:
            _certificates.clear()
        _certificates[url] = key
    return key


def confirm_subscription(url: str, incoming: Incoming) -> None:
    if not allowed_sns_url(url, incoming.config):
        raise Rejected(403, "SubscribeURL is not an https URL on an Amazon SNS host")
    _fetch(url, incoming)


def forget_certificates() -> None:
    with _lock:
        _certificates.clear()
