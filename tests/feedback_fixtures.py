"""Helpers for the feedback tests: a sent message to point payloads at, provider keys generated
per test run, and a real HTTPS server on 127.0.0.1 (its own CA) serving SNS certificates."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from crm.extensions import db
from crm.models import utcnow
from tests import factories


def sent_message(supporter=None, campaign=None, **overrides):
    supporter = supporter or factories.make_supporter()
    campaign = campaign or factories.make_campaign(status="sent")
    message = factories.make_message(campaign, supporter, **{"sent_at": utcnow(), **overrides})
    message.smtp_message_id = f"<{message.id}.{campaign.id}.0123456789ab@news.example.org>"
    db.session.commit()
    return message


def ref(message) -> str:
    return f"{message.campaign_id}.{message.id}"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject_key, subject: str, issuer_key, issuer: str, *, ca: bool = False, ip: str | None = None):
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class SNSServer:
    """An HTTPS server standing in for sns.<region>.amazonaws.com: serves the signing certificate
    and counts SubscribeURL visits. Its TLS certificate comes from a CA written to `ca_file`."""

    def __init__(self, tmp_path):
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_cert = _certificate(self.signing_key, "sns.amazonaws.com", self.signing_key, "sns.amazonaws.com")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(ca_key, "Test CA", ca_key, "Test CA", ca=True)
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls_cert = _certificate(tls_key, "127.0.0.1", ca_key, "Test CA", ip="127.0.0.1")
        self.ca_file = tmp_path / "ca.pem"
        self.ca_file.write_bytes(pem(ca))
        chain, key_file = tmp_path / "tls.pem", tmp_path / "tls.key"
        chain.write_bytes(pem(tls_cert))
        key_file.write_bytes(tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                if self.path.endswith(".pem"):
                    body, kind = pem(server.signing_cert), "application/x-pem-file"
                else:
                    body, kind = b"<ConfirmSubscriptionResponse/>", "text/xml"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.cert_url = f"https://{self.host}/SimpleNotificationService-0123456789abcdef.pem"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def sign(self, message: dict, version: str = "1", key=None) -> dict:
        from feedback.providers.ses import canonical_string

        message = {**message, "SignatureVersion": version, "SigningCertURL": message.get("SigningCertURL",
                                                                                           self.cert_url)}
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.signing_key).sign(canonical_string(message, message["Type"]), padding.PKCS1v15(),
                                                   digest)
        return {**message, "Signature": base64.b64encode(signature).decode()}


def sns_timestamp(offset: float = 0.0) -> str:
    return dt.datetime.fromtimestamp(time.time() + offset, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sns_notification(ses: dict, message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", **overrides) -> dict:
    """An SNS Notification envelope (Amazon SNS "HTTP/HTTPS notification JSON format")."""
    return {"Type": "Notification", "MessageId": message_id,
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:ses-feedback",
            "Message": json.dumps(ses), "Timestamp": sns_timestamp(),
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:"
                              "us-west-2:123456789012:ses-feedback:c9135db0-26c4-47ec-8998-413945fb5a96",
            **overrides}


def ses_mail(message, address: str) -> dict:
    """SES's mail object with the original headers included (SES "Notification contents")."""
    return {
        "timestamp": "2016-01-27T14:59:38.237Z", "source": "updates@news.example.org",
        "sourceArn": "arn:aws:ses:us-west-2:888888888888:identity/news.example.org", "sourceIp": "127.0.3.0",
        "sendingAccountId": "123456789012", "callerIdentity": "ses-smtp-user.20240101",
        "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
        "destination": [address], "headersTruncated": False,
        "headers": [{"name": "From", "value": "Test Org <updates@news.example.org>"},
                    {"name": "To", "value": address},
                    {"name": "Message-ID", "value": message.smtp_message_id},
                    {"name": "X-Message-Ref", "value": ref(message)},
                    {"name": "Subject", "value": "Our periodic update"}],
        "commonHeaders": {"from": ["Test Org <updates@news.example.org>"], "to": [address],
                          "messageId": message.smtp_message_id, "subject": "Our periodic update"},
    }


def ses_bounce(message, address: str, bounce_type: str = "Permanent", status: str = "5.1.1") -> dict:
    return {"notificationType": "Bounce", "mail": ses_mail(message, address), "bounce": {
        "bounceType": bounce_type, "bounceSubType": "General" if bounce_type == "Permanent" else "MailboxFull",
        "reportingMTA": "dns; email.example.com", "timestamp": "2016-01-27T14:59:38.237Z",
        "feedbackId": f"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-{message.id:06d}",
        "remoteMtaIp": "127.0.2.0",
        "bouncedRecipients": [{"emailAddress": address, "status": status, "action": "failed",
                               "diagnosticCode": f"smtp; 550 {status} <{address}>... User unknown"}]}}


def ses_complaint(message, address: str, feedback_type: str = "abuse") -> dict:
    return {"notificationType": "Complaint", "mail": ses_mail(message, address), "complaint": {
        "userAgent": "ExampleCorp Feedback Loop (V0.01)", "complainedRecipients": [{"emailAddress": address}],
        "complaintFeedbackType": feedback_type, "arrivalDate": "2016-01-27T14:59:38.237Z",
        "timestamp": "2016-01-27T14:59:38.237Z",
        "feedbackId": f"000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-{message.id:06d}"}}


def ses_delivery(message, address: str) -> dict:
    return {"notificationType": "Delivery", "mail": ses_mail(message, address), "delivery": {
        "timestamp": "2016-01-27T14:59:38.237Z", "processingTimeMillis": 546, "recipients": [address],
        "smtpResponse": "250 ok:  Message 64111812 accepted", "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "remoteMtaIp": "127.0.2.0"}}


def sendgrid_keys():
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    return key, public


def sendgrid_headers(key, body: bytes, timestamp: str | None = None) -> dict:
    timestamp = timestamp or str(int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}
