"""WSGI entry point for gunicorn: `gunicorn 'crm.wsgi:app'`. Checks every service first, then
warms the process for the API (api/warm.py), so no client's first request pays for it."""

import sys

from api.warm import warm_up
from crm import create_app
from crm.config import ConfigError
from crm.services import check_services

try:
    app = create_app()
    check_services(app)
    warm_up(app)
except ConfigError as exc:
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
