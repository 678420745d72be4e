"""Settings: bad or unreachable configuration stops start-up with one line naming the variable."""

import os
import subprocess
import sys

import pytest

from crm import create_app
from crm.config import ConfigError, load_config, parse_smtp_url
from crm.services import check_services


@pytest.mark.parametrize("overrides,variable", [
    ({"DATABASE_URL": "mysql://root@localhost/crm"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"),
    ({"SMTP_URL": "smtp://"}, "SMTP_URL"),
    ({"SMTP_URL": "smtp://relay.example.org?tls=maybe"}, "SMTP_URL"),
    ({"SMTP_URL": "ftp://relay.example.org"}, "SMTP_URL"),
    ({"BASE_URL": "crm.example.org"}, "BASE_URL"),
    ({"SEND_RATE_PER_SECOND": "fast"}, "SEND_RATE_PER_SECOND"),
    ({"CRM_ENV": "staging"}, "CRM_ENV"),
    ({"SIGN_RATE_LIMIT": "lots"}, "SIGN_RATE_LIMIT"),
    ({"PUBLIC_PAGE_CACHE_SECONDS": "0"}, "PUBLIC_PAGE_CACHE_SECONDS"),
])
def test_malformed_settings_name_the_variable(tmp_path, overrides, variable):
    """Each malformed value raises ConfigError naming its variable."""
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), {"SECRET_KEY": "x", **overrides})
    assert info.value.variable == variable


def test_secret_key_is_required_in_production(tmp_path, monkeypatch):
    """Outside development a missing SECRET_KEY is fatal; in development one is generated."""
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config(str(tmp_path), {"CRM_ENV": "production"})
    dev = load_config(str(tmp_path), {"CRM_ENV": "development"})
    assert len(dev["SECRET_KEY"]) > 40
    assert load_config(str(tmp_path), {"CRM_ENV": "development"})["SECRET_KEY"] == dev["SECRET_KEY"]


def test_embedded_defaults(tmp_path):
    """No DATABASE_URL means SQLite under instance/; postgres:// URLs use psycopg 3."""
    cfg = load_config(str(tmp_path), {"SECRET_KEY": "x"})
    assert cfg["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    cfg = load_config(str(tmp_path), {"SECRET_KEY": "x", "DATABASE_URL": "postgres://u@db/crm"})
    assert cfg["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/crm"


def test_smtp_url_parsing():
    """User, password (URL-encoded), port and TLS mode come out of SMTP_URL."""
    s = parse_smtp_url("smtp://user%40x:p%2Fss@relay.example.org:587?tls=starttls")
    assert s == {"host": "relay.example.org", "port": 587, "tls": "starttls",
                 "username": "user@x", "password": "p/ss"}
    assert parse_smtp_url("smtps://relay.example.org")["port"] == 465


@pytest.mark.parametrize("overrides,variable", [
    ({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "DATABASE_URL"),
    ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "REDIS_URL"),
    ({"SMTP_URL": "smtp://127.0.0.1:1"}, "SMTP_URL"),
])
def test_unreachable_services_are_named(database_url, redis_url, tmp_path, overrides, variable):
    """check_services() names the first service that does not answer."""
    config = {"CRM_ENV": "testing", "SECRET_KEY": "x", "DATABASE_URL": database_url,
              "REDIS_URL": redis_url, "INSTANCE_PATH": str(tmp_path), **overrides}
    app = create_app(config)
    with pytest.raises(ConfigError) as info:
        check_services(app)
    assert info.value.variable == variable


def test_cli_prints_one_line_and_exits(tmp_path):
    """`crm` with a malformed setting prints one line naming it, no traceback."""
    env = {**os.environ, "DATABASE_URL": "mysql://root@localhost/crm", "SECRET_KEY": "x",
           "CRM_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "crm.cli", "users", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Configuration error: DATABASE_URL: unsupported scheme 'mysql'; "
        "use postgresql://user@host/db or sqlite:///path"
    ]
