"""Settings: defaults, then environment variables, then an optional mapping (tests)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import limits


class ConfigError(Exception):
    """A setting is missing, malformed or points at something unreachable."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


ENV_SETTINGS = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "SMTP_URL",
    "BASE_URL",
    "MAIL_FROM",
    "ORG_NAME",
    "ORG_POSTAL_ADDRESS",
    "ORG_COUNTRY",
    "SEND_RATE_PER_SECOND",
    "CRM_ENV",
    "SIGN_REDIRECT_HOSTS",
    "SIGN_TRUSTED_ORIGINS",
    "SIGN_RATE_LIMIT",
    "ORG_TIMEZONE",
    "UNSUBSCRIBE_MAILTO",
    "BOUNCE_ADDRESS",
    "BOUNCE_VERP",
    "BOUNCE_MAILBOX_URL",
    "SNS_ALLOWED_HOSTS",
    "SNS_CA_FILE",
    "API_RATE_LIMIT",
    "WEBHOOK_RETRY_SECONDS",
)
# Tunables, settable from the environment too; each must be a positive number.
TUNABLES = {
    "SIGNATURE_COUNT_CACHE_SECONDS": float, "PUBLIC_PAGE_CACHE_SECONDS": float,
    "SMTP_MAX_CONNECTIONS": int, "SMTP_TIMEOUT_SECONDS": float, "SEND_BATCH_SIZE": int,
    "SEND_CHUNK_SIZE": int, "SEND_FLUSH_EVERY": int, "SEND_RETRIES": int, "SEND_RETRY_BACKOFF_SECONDS": float,
    "SEND_MAX_ATTEMPTS": int, "SEND_HEARTBEAT_SECONDS": int, "SEND_SWEEP_SECONDS": float,
    "SEND_ERROR_WINDOW": int, "SEND_ERROR_RATE": float,
    "COMPLAINT_PAUSE_RATE": float, "COMPLAINT_PAUSE_MIN_DELIVERIES": int, "BOUNCE_MAILBOX_INTERVAL_SECONDS": float,
    "FEEDBACK_MAX_AGE_SECONDS": float, "FEEDBACK_MAX_BODY_BYTES": int, "FEEDBACK_INTAKE_SWEEP_SECONDS": float,
    "LOGIN_MAX_FAILURES": int, "LOGIN_ACCOUNT_MAX_FAILURES": int, "LOGIN_IP_MAX_FAILURES": int,
    "LOGIN_WINDOW_SECONDS": int, "TRACKING_FLUSH_SECONDS": float, "SIGN_CONFIRM_EXPIRY_DAYS": int,
    "SIGN_CONFIRM_REMINDER_HOURS": float,
    "REPORTS_REFRESH_SECONDS": float, "EXPORT_STREAM_MAX_ROWS": int, "EXPORT_KEEP_DAYS": float,
    "EXPORT_CHUNK_ROWS": int, "AB_CHECK_SECONDS": float,
    "API_MAX_PER_PAGE": int, "API_MAX_BODY_BYTES": int, "API_COUNT_CACHE_SECONDS": int,
    "WEBHOOK_TIMEOUT_SECONDS": float,
}

DEFAULTS = {
    "CRM_ENV": "production",
    "BASE_URL": "http://127.0.0.1:5000",
    "MAIL_FROM": "updates@example.org",
    "ORG_NAME": "Refugee Rights Network",
    "ORG_POSTAL_ADDRESS": "",
    "ORG_COUNTRY": "",  # ISO 3166-1 code; the public form's country select starts on it
    "SEND_RATE_PER_SECOND": "50",
    "LOGIN_MAX_FAILURES": 10,  # failed sign-ins per account from one IP address (crm.auth.throttle)
    "LOGIN_ACCOUNT_MAX_FAILURES": 100,  # per account, from every address together
    "LOGIN_IP_MAX_FAILURES": 50,  # per IP address, across accounts
    "LOGIN_WINDOW_SECONDS": 15 * 60,
    "TRACKING_FLUSH_SECONDS": 2.0,  # how often the workers write recorded opens and clicks to the database
    "SIGN_CONFIRM_EXPIRY_DAYS": 14,  # double opt-in: days a signer has to confirm before the request lapses
    "SIGN_CONFIRM_REMINDER_HOURS": 48,  # double opt-in: when the one reminder goes to a signer who has not confirmed
    "WTF_CSRF_TIME_LIMIT": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    # No pool_pre_ping: crm.database pings only connections that sat idle (see there).
    "SQLALCHEMY_ENGINE_OPTIONS": {},
    "MAX_CONTENT_LENGTH": 200 * 1024 * 1024,
    "SIGN_RATE_LIMIT": "20/10 minutes",  # signature attempts per client IP (limits notation)
    "SIGNATURE_COUNT_CACHE_SECONDS": 5.0,  # how long public pages may show a cached signature count
    "PUBLIC_PAGE_CACHE_SECONDS": 1.0,  # each web process reuses a rendered petition page this long
    "SIGN_REDIRECT_HOSTS": "",  # comma-separated hosts petitions may redirect signers to
    "SIGN_TRUSTED_ORIGINS": "",  # comma-separated origins whose pages may post to this app (crm.cross_origin)
    "ORG_TIMEZONE": "UTC",  # campaign schedules are entered and shown in this zone
    "UNSUBSCRIBE_MAILTO": "",  # an address for mailto: List-Unsubscribe (optional)
    "BOUNCE_ADDRESS": "",  # envelope sender (Return-Path); the sender identity's address if empty
    # The sending pipeline (see campaigns/pipeline.py for what each one trades).
    "SMTP_MAX_CONNECTIONS": "4",  # open connections to the relay, across every worker
    "SMTP_TIMEOUT_SECONDS": 30,
    "SEND_BATCH_SIZE": 2000,  # message ids per batch job
    "SEND_CHUNK_SIZE": 50,  # rows a batch claims at a time: at most this many can end up `unknown`
    "SEND_FLUSH_EVERY": 50,  # outcomes written per database round trip
    "SEND_RETRIES": 3,  # retries of a 4xx or a lost connection, on a fresh connection
    "SEND_RETRY_BACKOFF_SECONDS": 1.0,  # doubled after each retry
    "SEND_MAX_ATTEMPTS": 3,  # batches that may try a deferred message before it is failed
    "SEND_HEARTBEAT_SECONDS": 30,  # a silent batch is presumed dead after this
    "SEND_SWEEP_SECONDS": 30,  # how often a sending campaign is checked for dead batches
    "SEND_ERROR_WINDOW": 500,  # the error threshold looks at this many latest messages...
    "SEND_ERROR_RATE": 0.05,  # ...and pauses the campaign when this share of them failed
    # Feedback after the send (feedback/): see the README, "Bounces and complaints".
    "BOUNCE_VERP": "",  # "1": envelope sender local+<campaign>.<message>@domain of BOUNCE_ADDRESS
    "BOUNCE_MAILBOX_URL": "",  # imaps://user:pass@host/INBOX or pop3s://user:pass@host
    "BOUNCE_MAILBOX_INTERVAL_SECONDS": 300,  # how often a worker reads the bounce mailbox
    "COMPLAINT_PAUSE_RATE": 0.003,  # a sending campaign pauses when its complaints pass this share...
    "COMPLAINT_PAUSE_MIN_DELIVERIES": 1000,  # ...of its messages sent, once it has sent this many
    "FEEDBACK_MAX_AGE_SECONDS": 300,  # timestamped webhooks older (or newer) than this are refused
    "FEEDBACK_MAX_BODY_BYTES": 2 * 1024 * 1024,  # larger webhook bodies are refused (413)
    "FEEDBACK_INTAKE_SWEEP_SECONDS": 5,  # how often a worker sweeps webhook feedback its queued job missed
    # Reports and exports (reports/): see the README, "Reports" and "Exports".
    "REPORTS_REFRESH_SECONDS": 60,  # how often a worker brings the report roll-ups up to date
    "EXPORT_STREAM_MAX_ROWS": 50_000,  # larger exports are built by a worker, with a progress bar
    "EXPORT_KEEP_DAYS": 7,  # a worker-built export file is deleted this many days after it is made
    "EXPORT_CHUNK_ROWS": 20_000,  # rows read from the server-side cursor (and written) at a time
    "AB_CHECK_SECONDS": 30,  # how often a worker looks for A/B tests whose wait is over
    # Hosts Amazon SNS certificates and subscription URLs may come from (https only).
    "SNS_ALLOWED_HOSTS": "sns.*.amazonaws.com,sns.*.amazonaws.com.cn",
    "SNS_CA_FILE": "",  # extra CA bundle for fetching them (tests, TLS-inspecting proxies)
    # The OSDI API (api/) and outbound webhooks (outbound/): see the README, "The API".
    "API_RATE_LIMIT": "300/minute",  # requests per API key (limits notation)
    "API_MAX_PER_PAGE": 25,  # the largest per_page (OSDI suggests 25), also the default
    "API_MAX_BODY_BYTES": 64 * 1024,  # larger request bodies are refused (400)
    "API_COUNT_CACHE_SECONDS": 30,  # total_records of a filtered collection is reused this long
    # Seconds before each retry of a failed webhook delivery: 1 min doubling, about 17 hours in all.
    "WEBHOOK_RETRY_SECONDS": "60,120,240,480,960,1920,3840,7680,15360,30720",
    "WEBHOOK_TIMEOUT_SECONDS": 10,  # connect and read timeout of one delivery attempt
}


# `crm dev` leaves what it chose for its instance folder here (development mode, the demo
# postal address, the URLs of the Redis and outbox it runs), so any other `crm` command run
# beside it -- `crm users create`, `crm campaigns send` -- uses the same configuration without
# being told. Read only when CRM_ENV is not set; environment variables still win.
DEV_SETTINGS_FILE = "dev-settings.json"
DEV_SETTINGS = ("CRM_ENV", "BASE_URL", "ORG_POSTAL_ADDRESS", "ORG_COUNTRY", "REDIS_URL", "SMTP_URL",
                "OUTBOX_ENABLED")


def dev_settings(instance_path: str) -> dict:
    """The settings `crm dev` recorded for this instance folder ({} when it never ran here)."""
    import json

    path = Path(instance_path) / DEV_SETTINGS_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    found = {k: str(v) for k, v in recorded.items() if k in DEV_SETTINGS and v not in (None, "")}
    socket_path = found.get("REDIS_URL", "").removeprefix("unix://")
    if found.get("REDIS_URL", "").startswith("unix://") and not Path(socket_path).exists():
        found.pop("REDIS_URL")  # that `crm dev` has stopped; its Redis is gone with it
        found.pop("SMTP_URL", None)
        found.pop("OUTBOX_ENABLED", None)
    return found


def load_config(instance_path: str, overrides: dict | None = None) -> dict:
    """Return the finished settings mapping, or raise ConfigError naming the bad variable."""
    config: dict = dict(DEFAULTS)
    if not os.environ.get("CRM_ENV") and "CRM_ENV" not in (overrides or {}):
        config.update(dev_settings(instance_path))
    for name in (*ENV_SETTINGS, *TUNABLES):
        value = os.environ.get(name)
        if value not in (None, ""):
            config[name] = value
    if overrides:
        config.update(overrides)

    env = config["CRM_ENV"]
    if env not in ("development", "production", "testing"):
        raise ConfigError("CRM_ENV", f"must be development, production or testing, not {env!r}")
    config["IS_DEV"] = env == "development"
    config.setdefault("TESTING", env == "testing")

    if not config.get("SECRET_KEY"):
        if env == "production":
            raise ConfigError("SECRET_KEY", "is required outside development; set a long random value")
        config["SECRET_KEY"] = _instance_secret(instance_path)

    config["SQLALCHEMY_DATABASE_URI"] = database_uri(config.get("DATABASE_URL"), instance_path)
    if config.get("REDIS_URL"):
        check_redis_url(config["REDIS_URL"])
    if config.get("SMTP_URL"):
        parse_smtp_url(config["SMTP_URL"])
    _check_base_url(config["BASE_URL"])
    config["SIGN_TRUSTED_ORIGINS"] = parse_origins(config["SIGN_TRUSTED_ORIGINS"], "SIGN_TRUSTED_ORIGINS")
    try:
        rate = float(config["SEND_RATE_PER_SECOND"])
    except (TypeError, ValueError):
        raise ConfigError("SEND_RATE_PER_SECOND", "must be a number") from None
    if rate <= 0:
        raise ConfigError("SEND_RATE_PER_SECOND", "must be greater than zero")
    config["SEND_RATE_PER_SECOND"] = rate

    for name, kind in TUNABLES.items():
        try:
            config[name] = kind(config[name])
        except (TypeError, ValueError):
            raise ConfigError(name, "must be a whole number" if kind is int else "must be a number") from None
        if config[name] < 0 or (config[name] == 0 and name != "SEND_RETRIES"):
            raise ConfigError(name, "must be greater than zero")
    try:
        ZoneInfo(config["ORG_TIMEZONE"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("ORG_TIMEZONE",
                          f"unknown time zone {config['ORG_TIMEZONE']!r}; use e.g. Europe/London") from None

    country = str(config.get("ORG_COUNTRY") or "").strip().upper()
    if country:
        from crm.countries import is_country_code

        if not is_country_code(country):
            raise ConfigError("ORG_COUNTRY", f"must be an ISO 3166-1 two-letter code such as GB, not {country!r}")
    config["ORG_COUNTRY"] = country

    _check_bounce_settings(config)
    try:
        limits.parse(config["SIGN_RATE_LIMIT"])
    except ValueError:
        raise ConfigError("SIGN_RATE_LIMIT", "must read like '20/10 minutes' or '100 per hour'") from None
    try:
        limits.parse(config["API_RATE_LIMIT"])
    except ValueError:
        raise ConfigError("API_RATE_LIMIT", "must read like '300/minute' or '5000 per hour'") from None
    config["WEBHOOK_RETRY_SECONDS"] = _retry_schedule(config["WEBHOOK_RETRY_SECONDS"])

    secure = env == "production"
    config.setdefault("SESSION_COOKIE_SECURE", secure)
    config.setdefault("REMEMBER_COOKIE_SECURE", secure)
    config.setdefault("INSTANCE_PATH", instance_path)
    config.setdefault("OUTBOX_DIR", str(Path(instance_path) / "outbox"))
    return config


def _retry_schedule(value) -> tuple[int, ...]:
    """WEBHOOK_RETRY_SECONDS as whole seconds, one per retry (0 retries now; tests use it)."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
    try:
        seconds = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError("WEBHOOK_RETRY_SECONDS",
                          "must be whole seconds separated by commas, e.g. 60,120,240") from None
    if any(s < 0 for s in seconds) or len(seconds) > 30:
        raise ConfigError("WEBHOOK_RETRY_SECONDS", "must be at most 30 numbers of seconds, none negative")
    return seconds


def _instance_secret(instance_path: str) -> str:
    """Keep one random dev/test key in instance/ so sessions survive restarts."""
    path = Path(instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def database_uri(url: str | None, instance_path: str) -> str:
    """Turn DATABASE_URL into an SQLAlchemy URI; no URL means SQLite under instance/."""
    if not url:
        Path(instance_path).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(instance_path) / 'crm.sqlite3'}"
    scheme = urlsplit(url).scheme
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if scheme in ("postgresql+psycopg", "sqlite"):
        return url
    raise ConfigError(
        "DATABASE_URL",
        f"unsupported scheme {scheme or '(none)'!r}; use postgresql://user@host/db or sqlite:///path",
    )


def check_redis_url(url: str) -> None:
    """Reject a REDIS_URL that redis-py could not use."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL", f"unsupported scheme {scheme or '(none)'!r}; use redis://host:6379/0")


def parse_smtp_url(url: str) -> dict:
    """Split SMTP_URL (smtp://user:pass@host:587?tls=starttls) into connection settings."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError("SMTP_URL", f"unsupported scheme {parts.scheme or '(none)'!r}; use smtp:// or smtps://")
    if not parts.hostname:
        raise ConfigError("SMTP_URL", "has no host")
    query = parse_qs(parts.query)
    tls = query.get("tls", ["ssl" if parts.scheme == "smtps" else "none"])[0]
    if tls not in ("none", "starttls", "ssl"):
        raise ConfigError("SMTP_URL", f"tls must be none, starttls or ssl, not {tls!r}")
    try:
        port = parts.port or (465 if tls == "ssl" else 25)
    except ValueError:
        raise ConfigError("SMTP_URL", "has an invalid port") from None
    return {
        "host": parts.hostname,
        "port": port,
        "tls": tls,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }


def _check_bounce_settings(config: dict) -> None:
    verp = str(config.get("BOUNCE_VERP") or "").strip().lower()
    if verp not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError("BOUNCE_VERP", "must be 1 or 0")
    config["BOUNCE_VERP"] = verp in ("1", "true", "yes", "on")
    if config["BOUNCE_VERP"] and "@" not in (config.get("BOUNCE_ADDRESS") or ""):
        raise ConfigError("BOUNCE_VERP", "needs BOUNCE_ADDRESS, e.g. bounces@news.example.org")
    if config.get("BOUNCE_MAILBOX_URL"):
        from feedback.mailbox import MailboxError, parse_mailbox_url

        try:
            parse_mailbox_url(config["BOUNCE_MAILBOX_URL"])
        except MailboxError as exc:
            raise ConfigError("BOUNCE_MAILBOX_URL", str(exc)) from None


def _check_base_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("BASE_URL", f"must be an absolute http(s) URL, not {url!r}")


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """The origin of an http(s) URL as a browser writes it in `Origin` (RFC 6454 section 6.2):
    `scheme://host[:port]`, lower-cased, the default port left out; None for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")


def parse_origins(value, variable: str) -> frozenset[str]:
    """A comma-separated list (or any iterable) of origins, each `https://host[:port]` with no path."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    origins = set()
    for item in filter(None, items):
        origin = origin_of(item)
        if origin is None or urlsplit(item).path not in ("", "/") or urlsplit(item).query:
            raise ConfigError(variable, f"{item!r} is not an origin; write it as https://www.example.org")
        origins.add(origin)
    return frozenset(origins)
