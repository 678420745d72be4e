"""Report pages and engagement exports at the issue's scale, on PostgreSQL.

Data, generated inside PostgreSQL with generate_series (seeded, so runs are comparable):
1,000,000 supporters (70% subscribed, each with an opt-in consent event; 1% unsubscribed through
a campaign), 200 petitions with about 2,000,000 signatures skewed towards petition 1 (a third
with utm parameters), 100 sent campaigns of 50,000 messages each (5,000,000 messages; 1% bounced,
0.05% complaints), and 10,000,000 engagement events over the first 72 hours after each send
(opens and clicks, 20% by machines, clicks on five links). Sizes: --supporters, --events.
The rows go in with foreign-key triggers off (session_replication_role = replica: they are
consistent by construction); then each engaged message gets what the tracking flush keeps on it
(first human open and click, the machine flags) in one grouped UPDATE.

Then, in this process: a full refresh of the roll-ups and an incremental one (reports/rollups.py);
each report page requested 20 times through the app, signed in as an analyst, server time in
process (median and p95); and the engagement export of every message (5,000,000 rows) to Parquet
and to CSV, each in a fresh process so its peak memory (ru_maxrss) is its own, with rows/s, and
the Parquet file read back with pandas to check the row count.

It lives in its own database, BENCH_REPORTS_DATABASE_URL (default .../bench_reports), reused while
the sizes match (--rebuild forces a rebuild; --drop drops it afterwards: about 5 GB).

    python -m bench reports
    python -m bench.bench_reports --explain
    python -m bench.bench_reports --supporters 100000 --events 1000000 --no-export
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time

from bench.pg import drop_database, ensure_database

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_reports"
DEFAULT_SUPPORTERS = 1_000_000
DEFAULT_EVENTS = 10_000_000
CAMPAIGNS = 100
PAGE_REPEATS = 20
FORMATS = ("parquet", "csv")

DATA = [
    "SELECT setseed(0.42)",
    """INSERT INTO petition (slug, title, body, addressed_to, goal, consent_mode, consent_wording,
           consent_wording_version, thank_you_message, redirect_url, status, created_at, updated_at)
       SELECT 'bench-' || p, 'Bench petition ' || p, '', '', 100000, 'implied', 'Updates.', 1, '', '',
              'open', now() - interval '400 days', now() FROM generate_series(1, 200) p""",
    """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
           custom_fields, notes, created_at, updated_at)
       SELECT 'bench' || g || '@example.net', 'First' || g, 'Last' || (g %% 5000), 'N1 9GU',
              CASE WHEN random() < 0.8 THEN 'GB' ELSE (ARRAY['FR', 'IE', 'DE'])[1 + floor(random() * 3)::int] END,
              CASE WHEN r < 0.70 THEN 'subscribed' WHEN r < 0.85 THEN 'unsubscribed'
                   WHEN r < 0.92 THEN 'bouncing' ELSE 'never_subscribed' END,
              CASE WHEN random() < 0.5 THEN 'petition:bench-1' ELSE 'import:1' END, '{}', '',
              now() - random() * interval '365 days', now()
       FROM (SELECT g, random() AS r FROM generate_series(1, %(n)s) g) s""",
    # Two signing rounds skewed towards the low petition ids; a third carry utm parameters.
    *["""INSERT INTO signature (petition_id, supporter_id, comment, source, utm_source, utm_medium, utm_campaign,
             referrer_host, created_at)
         SELECT 1 + floor(power(random(), 2) * 200)::int, id, '', 'web',
                CASE WHEN r < 0.33 THEN (ARRAY['newsletter', 'facebook', 'partner'])[1 + floor(random() * 3)::int]
                     ELSE '' END,
                CASE WHEN r < 0.33 THEN 'email' ELSE '' END, '', '', now() - random() * interval '365 days'
         FROM (SELECT id, random() AS r FROM supporter) s
         ON CONFLICT DO NOTHING"""] * 2,
    # Each subscribed or once-subscribed supporter opted in once; the unsubscribed left later.
    """INSERT INTO consent_event (supporter_id, action, source, wording, reason, created_at)
       SELECT id, 'opt_in', 'petition:bench-1', 'Updates.', '', created_at FROM supporter
       WHERE email_status <> 'never_subscribed'""",
    """INSERT INTO consent_event (supporter_id, action, source, wording, reason, created_at)
       SELECT id, CASE WHEN email_status = 'unsubscribed' THEN 'opt_out' ELSE 'bounce' END, 'bench', '', '',
              created_at + random() * (now() - created_at)
       FROM supporter WHERE email_status IN ('unsubscribed', 'bouncing')""",
    """INSERT INTO campaign (name, subject, preheader, reply_to, mjml, text_body, track_opens, track_clicks,
           status, version, status_reason, total, sent_count, failed_count, unknown_count, suppressed_count,
           scheduled_at, started_at, finished_at, created_at, updated_at)
       SELECT 'Bench update ' || c, 'Update ' || c, '', '', '', '', true, true, 'sent', 1, '', 0, 0, 0, 0, 0,
              now() - c * interval '3 days', now() - c * interval '3 days',
              now() - c * interval '3 days' + interval '1 hour',
              now() - c * interval '3 days', now()
       FROM generate_series(1, %(campaigns)s) c""",
    # A twentieth of the supporters per campaign, a different twentieth each time (ids are 1..n).
    """INSERT INTO message (campaign_id, supporter_id, email, status, attempts, error, created_at, sent_at,
           bounced_at, bounce_type, complained_at)
       SELECT c.id, s.id, s.email, 'sent', 1, '', c.started_at, c.started_at + random() * interval '1 hour',
              CASE WHEN b < 0.01 THEN c.started_at + interval '2 hours' END,
              CASE WHEN b < 0.007 THEN 'hard' WHEN b < 0.01 THEN 'soft' END,
              CASE WHEN b > 0.9995 THEN c.started_at + interval '3 hours' END
       FROM campaign c CROSS JOIN LATERAL generate_series(1 + c.id %% 20, %(n)s, 20) AS sid
       JOIN supporter s ON s.id = sid CROSS JOIN LATERAL (SELECT random() AS b) r""",
    # Engagement: %(per)s events per message on average, over its first 72 hours (most early).
    """INSERT INTO engagement_event (message_id, supporter_id, campaign_id, kind, url, is_machine, created_at)
       SELECT id, supporter_id, campaign_id, CASE WHEN k < 0.7 THEN 'open' ELSE 'click' END,
              CASE WHEN k < 0.7 THEN '' ELSE 'https://example.org/link-' || (1 + floor(u * 5)::int) END,
              machine, sent_at + power(t, 3) * interval '72 hours'
       FROM (SELECT m.id, m.supporter_id, m.campaign_id, m.sent_at, random() AS k, random() AS u, random() AS t,
                    random() < 0.2 AS machine
             FROM message m CROSS JOIN generate_series(1, 4) g WHERE random() < %(per)s / 4.0) e""",
    # What the tracking flush keeps on each message: the first human open and click, and whether
    # a machine opened or clicked it (one pass over the events, rewriting the engaged messages).
    """UPDATE message m SET opened_at = e.opened_at, clicked_at = e.clicked_at,
              opened_by_machine = e.opened_by_machine, clicked_by_machine = e.clicked_by_machine
       FROM (SELECT message_id,
                    min(created_at) FILTER (WHERE kind = 'open' AND NOT is_machine) AS opened_at,
                    min(created_at) FILTER (WHERE kind = 'click' AND NOT is_machine) AS clicked_at,
                    bool_or(kind = 'open' AND is_machine) AS opened_by_machine,
                    bool_or(kind = 'click' AND is_machine) AS clicked_by_machine
             FROM engagement_event GROUP BY message_id) e
       WHERE m.id = e.message_id""",
    """INSERT INTO consent_event (supporter_id, action, source, wording, reason, campaign_id, created_at)
       SELECT supporter_id, 'opt_out', 'unsubscribe_link', '', '', campaign_id, sent_at + interval '1 hour'
       FROM message WHERE random() < 0.002""",
]
# Bumped when DATA changes, so a database built by an older bench is built again.
DATA_VERSION = 2


def build(n: int, events: int) -> float:
    """Fresh schema (Alembic) and the generated data; seconds taken."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm.extensions import db

    started = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade()
    messages = CAMPAIGNS * n / 20
    params = {"n": n, "campaigns": CAMPAIGNS, "per": events / messages}
    with db.engine.begin() as conn:
        # The generated rows are consistent by construction: no per-row foreign-key trigger
        # checks (at 10,000,000 events they took longer than inserting the rows).
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("CREATE TABLE bench_meta (key text PRIMARY KEY, value bigint NOT NULL)"))
        for statement in DATA:
            step = time.perf_counter()
            conn.exec_driver_sql(statement, params if "%" in statement else None)
            print(f"  {' '.join(statement.split()[:3])}: {time.perf_counter() - step:.0f} s", flush=True)
        conn.execute(text("INSERT INTO bench_meta VALUES ('supporters', :n), ('events', :e), ('data', :v)"),
                     {"n": n, "e": events, "v": DATA_VERSION})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def _meta(key: str) -> int | None:
    from sqlalchemy import inspect, text

    from crm.extensions import db

    if not inspect(db.engine).has_table("bench_meta"):
        return None
    return db.session.scalar(text("SELECT value FROM bench_meta WHERE key = :k"), {"k": key})


def _app(url: str, instance: str):
    from crm import create_app

    return create_app({"CRM_ENV": "testing", "TESTING": True, "SECRET_KEY": "bench", "DATABASE_URL": url,
                       "INSTANCE_PATH": instance, "WTF_CSRF_ENABLED": False, "ORG_POSTAL_ADDRESS": "1 Bench St",
                       "EXPORT_STREAM_MAX_ROWS": 10**9})


def time_pages(app) -> list[dict]:
    from crm.extensions import db
    from crm.models import Campaign, Petition, StaffUser

    with app.app_context():
        analyst = db.session.scalar(db.select(StaffUser).where(StaffUser.email == "bench-analyst@example.org"))
        if analyst is None:
            analyst = StaffUser(email="bench-analyst@example.org", name="Bench", role="analyst", active=True)
            analyst.set_password("bench-password-1")
            db.session.add(analyst)
            db.session.commit()
        campaign = db.session.scalar(db.select(Campaign.id).where(Campaign.name == "Bench update 50"))
        petition = db.session.scalar(db.select(Petition.id).where(Petition.slug == "bench-1"))
        analyst_id = analyst.id
        db.session.remove()
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"], session["_fresh"] = str(analyst_id), True
    pages = [("dashboard", "/reports/"), ("campaign report", f"/reports/campaigns/{campaign}"),
             ("petition report", f"/reports/petitions/{petition}"), ("exports form", "/reports/exports"),
             ("petitions table", "/reports/petitions")]
    rows = []
    for name, url in pages:
        repeats = PAGE_REPEATS
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        times = sorted(times[1:])  # the first warms the caches
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        rows.append({"case": f"{name}: median", "value": f"{statistics.median(times):.1f}", "unit": "ms",
                     "notes": f"p95 {p95:.1f} ms over {repeats}; target < 300 ms; {_load()}"})
    return rows


def _load() -> str:
    """The machine's load average (1, 5, 15 minutes): the bench shares its cores."""
    return "load " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def _export_in_child(url: str, instance: str, fmt: str, path: str, queue) -> None:
    from crm.extensions import db
    from reports import exports

    app = _app(url, instance)
    with app.app_context():
        started = time.perf_counter()
        with open(path, "wb") as handle:
            rows = exports.write_file("engagement", fmt, exports.Filters(), False, handle)
        seconds = time.perf_counter() - started
        db.session.remove()
    queue.put({"rows": rows, "seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "bytes": os.path.getsize(path)})


def time_exports(url: str, instance: str) -> list[dict]:
    rows = []
    context = multiprocessing.get_context("spawn")
    for fmt in FORMATS:
        path = os.path.join(tempfile.gettempdir(), f"bench-engagement.{fmt}")
        queue = context.Queue()
        child = context.Process(target=_export_in_child, args=(url, instance, fmt, path, queue))
        child.start()
        result = queue.get()
        child.join()
        note = f"{result['rows']:,} rows, {result['bytes'] / 1e6:.0f} MB file, peak {result['peak_mb']:.0f} MB RSS"
        if fmt == "parquet":
            import pandas as pd

            read = len(pd.read_parquet(path, columns=["message_id"]))
            note += f"; pandas read back {read:,} rows ({'match' if read == result['rows'] else 'MISMATCH'})"
        rows.append({"case": f"export {fmt}", "value": f"{result['seconds']:.1f}", "unit": "s",
                     "notes": f"{note}; {result['rows'] / result['seconds']:,.0f} rows/s; target < 60 s, < 500 MB; "
                              f"{_load()}"})
        os.remove(path)
    return rows


def explain_pages(app) -> None:
    """EXPLAIN ANALYZE of the statements the campaign report runs, captured from a real request."""
    from sqlalchemy import event

    from crm.extensions import db

    with app.app_context():
        statements = []

        def capture(conn, cursor, sql, parameters, context, executemany):
            statements.append((sql, parameters))

        event.listen(db.engine, "before_cursor_execute", capture)
        time_pages(app)
        event.remove(db.engine, "before_cursor_execute", capture)
        slow = []
        with db.engine.connect() as conn:
            for sql, parameters in statements:
                if not sql.lstrip().upper().startswith("SELECT"):
                    continue
                started = time.perf_counter()
                conn.exec_driver_sql(sql, parameters)
                slow.append((time.perf_counter() - started, sql, parameters))
            for seconds, sql, parameters in sorted(slow, key=lambda s: -s[0])[:3]:
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, parameters).all()
                print(f"--- {seconds * 1000:.1f} ms\n{sql[:400]}\n" + "\n".join(r[0] for r in plan))


def run(supporters: int | None = None, events: int | None = None, *, rebuild: bool = False, drop: bool = False,
        export: bool = True, show_plans: bool = False) -> list[dict]:
    from crm.extensions import db
    from reports.rollups import refresh

    supporters = supporters or int(os.environ.get("BENCH_REPORTS_SUPPORTERS", DEFAULT_SUPPORTERS))
    events = events or int(os.environ.get("BENCH_REPORTS_EVENTS", DEFAULT_EVENTS))
    url = os.environ.get("BENCH_REPORTS_DATABASE_URL", DEFAULT_URL)
    ensure_database(url)
    instance = tempfile.mkdtemp(prefix="bench-reports-")
    app = _app(url, instance)
    rows = []
    with app.app_context():
        if rebuild or (_meta("supporters"), _meta("events"), _meta("data")) != (supporters, events, DATA_VERSION):
            print(f"building {supporters:,} supporters and {events:,} events ...", flush=True)
            rows.append({"case": "generate data", "value": f"{build(supporters, events):.0f}", "unit": "s",
                         "notes": "COPY-free: INSERT ... SELECT generate_series inside PostgreSQL"})
        counts = {t: db.session.scalar(db.text(f"SELECT count(*) FROM {t}"))
                  for t in ("supporter", "signature", "message", "engagement_event", "consent_event")}
        rows.append({"case": "data", "value": f"{counts['engagement_event']:,}", "unit": "events",
                     "notes": ", ".join(f"{k} {v:,}" for k, v in counts.items())})
        started = time.perf_counter()
        done = refresh(full=True)
        rows.append({"case": "roll-up refresh, full", "value": f"{time.perf_counter() - started:.1f}", "unit": "s",
                     "notes": f"{len(done.campaigns)} campaigns, {len(done.days)} days; {_load()}"})
        # An incremental refresh after a little new activity on one campaign.
        db.session.execute(db.text(
            "INSERT INTO engagement_event (message_id, supporter_id, campaign_id, kind, url, is_machine, created_at) "
            "SELECT id, supporter_id, campaign_id, 'open', '', false, now() FROM message "
            "WHERE campaign_id = 1 LIMIT 100"))
        db.session.commit()
        started = time.perf_counter()
        done = refresh()
        rows.append({"case": "roll-up refresh, incremental", "value": f"{time.perf_counter() - started:.1f}",
                     "unit": "s", "notes": f"{len(done.campaigns)} campaigns recomputed (100 new events)"})
        db.session.remove()
    rows += time_pages(app)
    if show_plans:
        explain_pages(app)
    if export:
        rows += time_exports(url, instance)
    from bench.pg import release

    release(app, url, instance, keep=not drop)
    if drop:
        drop_database(url)
    return rows


def main() -> None:
    from bench.__main__ import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supporters", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--drop", action="store_true")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    print_table([{"benchmark": "reports", **row} for row in run(
        args.supporters, args.events, rebuild=args.rebuild, drop=args.drop, export=not args.no_export,
        show_plans=args.explain)])


if __name__ == "__main__":
    main()
