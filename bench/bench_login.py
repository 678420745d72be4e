"""Staff sign-in cost: scrypt hashing dominates, by design (it slows password guessing).

Then the sign-in form itself, through the app (Flask's test client, in process, SQLite and the
embedded Redis in a temporary folder, throttling raised out of the way): a failed sign-in
must cost the same whether the address has an account or not, or timing would tell which
addresses are staff. Median of BENCH_LOGIN_ROUNDS (default 15) per case.

    python -m bench login
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from werkzeug.security import check_password_hash, generate_password_hash

PASSWORD = "correct-horse-battery"


def _scrypt_row(rounds: int) -> dict:
    digest = generate_password_hash(PASSWORD, method="scrypt")
    started = time.perf_counter()
    for _ in range(rounds):
        check_password_hash(digest, PASSWORD)
    per_check = (time.perf_counter() - started) / rounds * 1000
    return {"case": "scrypt password check", "value": f"{per_check:.1f}", "unit": "ms", "notes": f"mean of {rounds}"}


def _sign_in_rows(rounds: int) -> list[dict]:
    from flask_migrate import upgrade

    from crm import create_app
    from crm.extensions import db
    from crm.models import StaffUser

    with tempfile.TemporaryDirectory(prefix="crm-bench-login-") as folder:
        app = create_app({"CRM_ENV": "testing", "SECRET_KEY": "bench", "INSTANCE_PATH": folder,
                          "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3", "WTF_CSRF_ENABLED": False,
                          "LOGIN_MAX_FAILURES": 10**6, "LOGIN_ACCOUNT_MAX_FAILURES": 10**6,
                          "LOGIN_IP_MAX_FAILURES": 10**6})
        with app.app_context():
            upgrade()
            for email, active in (("staff@example.org", True), ("gone@example.org", False)):
                user = StaffUser(email=email, name="Bench", role="organizer", active=active)
                user.set_password(PASSWORD)
                db.session.add(user)
            db.session.commit()
            cases = {"known address, wrong password": ("staff@example.org", "wrong-password"),
                     "unknown address": ("nobody@example.org", "wrong-password"),
                     "deactivated account, right password": ("gone@example.org", PASSWORD)}
            client = app.test_client()
            medians = {}
            for name, (email, password) in cases.items():
                times = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    response = client.post("/login", data={"email": email, "password": password})
                    times.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 401:
                        raise SystemExit(f"{name}: HTTP {response.status_code}")
                medians[name] = statistics.median(times)
            db.session.remove()
            db.engine.dispose()
    known = medians["known address, wrong password"]
    rows = [{"case": f"failed sign-in: {name}", "value": f"{ms:.1f}", "unit": "ms",
             "notes": f"POST /login through the app, median of {rounds}; {ms / known:.2f} of a known address's"}
            for name, ms in medians.items()]
    return rows


def run() -> list[dict]:
    rounds = int(os.environ.get("BENCH_LOGIN_ROUNDS") or 15)
    return [_scrypt_row(20), *_sign_in_rows(rounds)]
