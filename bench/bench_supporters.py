"""The staff supporter list at 1,000,000 supporters on PostgreSQL: server time per page.

Target: under 200 ms for the list page with a search filter (the page runs the filtered
COUNT and the first page of rows).

One run, on a database of its own (BENCH_SUPPORTERS_DATABASE_URL, default .../bench_supporters,
rebuilt, then dropped unless BENCH_SUPPORTERS_KEEP is set):
1. BENCH_SUPPORTERS_ROWS (default 1,000,000) supporters generated in SQL (generate_series):
   names drawn from 60 first and 80 last names, so a name search matches many and a full
   address one; a third signed one of two petitions; a tenth tagged; ANALYZE.
2. A staff member signs in through the real login form (CSRF on, production settings), and
   each page is requested BENCH_SUPPORTERS_REPEATS times (default 7) through Flask's test
   client, in process: the time measured is the server's (routing, SQL, template), with no
   network and no load generator. The median and worst are printed.

    python -m bench supporters
    BENCH_SUPPORTERS_ROWS=200000 python -m bench.bench_supporters
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time

from bench.pg import fresh_database, release

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_supporters"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
PASSWORD = "bench-password-123"

FIRST = ("Amina Ben Chloe Dawit Elena Farid Grace Hamza Ines Jonas Kemi Lena Malik Nadia Omar Priya "
         "Quentin Rosa Samir Tara Umar Vera Wei Xena Yusuf Zara Aisha Bruno Carmen Diego Emre Fatima "
         "Gabriel Hana Ivan Julia Karim Leila Marta Nikolai Olga Pablo Rania Sven Tomas Ursula Viktor "
         "Wanda Yara Zoltan Anya Bilal Clara Deniz Eva Felix Gita Hugo Irene Jamal").split()
LAST = ("Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans "
        "Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper "
        "Hill Ward Hughes Moore Clark King Harrison Lewis Baker Lee Allen Morris Khan Scott Watson Davis "
        "Parker James Bennett Young Phillips Richardson Mitchell Bailey Carter Cook Singh Shaw Bell "
        "Collins Morgan Kelly Begum Miller Cox Marshall Simpson Anderson Ellis Adams Wilkinson Ali "
        "Mason Lloyd Murphy Price Russell Mohamed Hussain Ahmed Kaur Rahman").split()

GENERATE = [
    """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
           custom_fields, notes, created_at, updated_at)
       SELECT lower(f.name || '.' || l.name || g) || '@example.net', f.name, l.name, 'N1 9GU',
              (ARRAY['GB','GB','GB','IE','FR','DE'])[1 + mod(g, 6)],
              (ARRAY['subscribed','subscribed','subscribed','unsubscribed','never_subscribed'])[1 + mod(g, 5)],
              'import:1', '{}', '', now() - g * interval '1 minute', now()
       FROM generate_series(1, %(n)s) g
       JOIN (SELECT name, row_number() OVER () - 1 AS i FROM unnest(%(first)s::text[]) name) f ON f.i = mod(g, %(nf)s)
       JOIN (SELECT name, row_number() OVER () - 1 AS i FROM unnest(%(last)s::text[]) name) l
         ON l.i = mod(g / %(nf)s, %(nl)s)""",
    """INSERT INTO signature (petition_id, supporter_id, source, comment, created_at)
       SELECT (SELECT id FROM petition WHERE slug = CASE WHEN mod(s.id, 2) = 0 THEN 'asylum' ELSE 'detention' END),
              s.id, 'web', '', s.created_at
       FROM supporter s WHERE mod(s.id, 3) = 0""",
    """INSERT INTO supporter_tag (supporter_id, tag_id)
       SELECT s.id, (SELECT id FROM tag WHERE name = 'volunteer') FROM supporter s WHERE mod(s.id, 10) = 0""",
    "ANALYZE",
]


def _time(client, url: str, repeats: int) -> tuple[float, float, str]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url}: HTTP {response.status_code}")
    shown = re.search(r"<strong>([\d,]+)</strong> supporters? match", response.text)
    return statistics.median(times), max(times), shown.group(1) if shown else "0"


def run() -> list[dict]:
    from flask_migrate import upgrade
    from sqlalchemy import select

    from crm import create_app
    from crm.extensions import db
    from crm.models import Petition, StaffUser, Supporter, Tag
    from crm.redis_conn import get_redis

    url = os.environ.get("BENCH_SUPPORTERS_DATABASE_URL", DEFAULT_URL)
    n = int(os.environ.get("BENCH_SUPPORTERS_ROWS", 1_000_000))
    repeats = int(os.environ.get("BENCH_SUPPORTERS_REPEATS", 7))
    fresh_database(url)
    instance = tempfile.mkdtemp(prefix="crm-bench-supporters-")
    app = create_app({"CRM_ENV": "production", "SECRET_KEY": "bench-secret", "DATABASE_URL": url,
                      "REDIS_URL": os.environ.get("BENCH_SUPPORTERS_REDIS_URL", DEFAULT_REDIS),
                      "BASE_URL": "https://crm.example.org", "ORG_NAME": "Bench Org",
                      "SESSION_COOKIE_SECURE": False, "INSTANCE_PATH": instance, "CRM_INSTANCE_PATH": instance})
    rows: list[dict] = []
    try:
        with app.app_context():
            get_redis().flushdb()
            upgrade()
            db.session.add_all([Petition(slug="asylum", title="A fair asylum system", status="open"),
                                Petition(slug="detention", title="End detention", status="closed"),
                                Tag(name="volunteer")])
            db.session.commit()
            started = time.perf_counter()
            params = {"n": n, "first": FIRST, "last": LAST, "nf": len(FIRST), "nl": len(LAST)}
            with db.engine.begin() as conn:
                for statement in GENERATE:
                    conn.exec_driver_sql(statement, params if "%(" in statement else None)
            rows.append({"case": "generate", "value": f"{time.perf_counter() - started:.1f}", "unit": "s",
                         "notes": f"{n:,} supporters, a third signed, a tenth tagged"})
            from werkzeug.security import generate_password_hash

            db.session.add(StaffUser(email="organizer@example.org", name="Bench", role="organizer",
                                     password_hash=generate_password_hash(PASSWORD)))
            db.session.commit()
            petition = db.session.scalar(select(Petition.id).where(Petition.slug == "asylum"))
            tag = db.session.scalar(select(Tag.id).where(Tag.name == "volunteer"))
            deep = db.session.scalar(select(Supporter.id).order_by(Supporter.id).offset(n // 2).limit(1))
            one = db.session.scalar(select(Supporter.email).where(Supporter.id == n // 3))

        client = app.test_client()
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        response = client.post("/login", data={"csrf_token": token, "email": "organizer@example.org",
                                               "password": PASSWORD})
        if response.status_code != 302:
            raise SystemExit(f"sign-in failed: HTTP {response.status_code}")
        cases = [
            ("no filter, newest first", "/supporters/"),
            ("search a common last name", "/supporters/?q=smith"),
            ("search a first and last name", "/supporters/?q=amina+patel"),
            ("search one full address", f"/supporters/?q={one}"),
            ("search with no match", "/supporters/?q=nobody-has-this"),
            ("search + country + status", "/supporters/?q=khan&country=GB&email_status=subscribed"),
            ("petition signed", f"/supporters/?petition={petition}"),
            ("tag + search", f"/supporters/?tag={tag}&q=lee"),
            ("sorted by last name", "/supporters/?sort=last_name"),
            ("page deep in the table", f"/supporters/?after={deep}"),
        ]
        for name, path in cases:
            median, worst, matched = _time(client, path, repeats)
            rows.append({"case": name, "value": f"{median:.0f}", "unit": "ms",
                         "notes": f"median of {repeats}, worst {worst:.0f} ms; {matched} match; {path}"})
    finally:
        release(app, url, instance, keep=bool(os.environ.get("BENCH_SUPPORTERS_KEEP")))
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table([{"benchmark": "supporters", **row} for row in run()])
