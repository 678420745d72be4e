"""WSGI entry point for gunicorn: `gunicorn 'crm.wsgi:app'`. Checks every service first."""

import sys

from crm import create_app
from crm.config import ConfigError
from crm.services import check_services

try:
    app = create_app()
    check_services(app)
except ConfigError as exc:
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
