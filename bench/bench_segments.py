"""Segment count and sample timings for the issue's five-condition segment on PostgreSQL or SQLite.

Data, generated inside PostgreSQL with generate_series (seeded, so runs are comparable):

- supporters (default 1,000,000; --supporters / BENCH_SEGMENT_SUPPORTERS) with realistic spreads
  of email status, country, postal code and source; 30% tagged with one of 10 tags;
- 200 petitions and three signing rounds per supporter skewed towards the low petition ids
  (about 3 signatures per supporter, duplicates dropped);
- engagement: 20 sent campaigns, one every 10 days back to 200 days ago, each messaging a random
  share of supporters, and open / click events on those messages, about two events per message,
  from the 60% of supporters who ever open anything. --events / BENCH_SEGMENT_EVENTS sets the
  number of events (default 1,000,000 for a quick run; the issue's figure is 10,000,000).

It lives in its own database, BENCH_SEGMENT_DATABASE_URL (default .../bench_segments: the import
bench drops and recreates the schema of `bench`, so the two must not share it), created when
missing and reused while the sizes match (a table bench_meta records them; --rebuild forces a
rebuild). --drop drops the database afterwards: at 10M events it takes about 4 GB.

--sqlite runs the same segment on SQLite instead: the same shares generated in Python (seeded),
200,000 supporters and 10 events per supporter unless told otherwise, in the file
BENCH_SEGMENT_SQLITE_PATH (default crm-bench-segments.sqlite3 in the temp folder), reused while
the sizes match; --explain prints EXPLAIN QUERY PLAN there.

The segment (the issue's): signed petition 1 or 2 AND subscribed AND postal code starting with
SW1 or N1 AND has not opened a campaign email in the last 90 days AND not tagged "tag3". Each
query runs 5 times; the median is reported. --explain prints EXPLAIN (ANALYZE, BUFFERS) of the
count and the sample.

    python -m bench segments
    python -m bench.bench_segments --events 10000000 --explain --drop
    python -m bench.bench_segments --supporters 200000 --events 2000000
    python -m bench.bench_segments --sqlite --explain
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench.pg import drop_database, ensure_database

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_segments"
DEFAULT_SUPPORTERS = 1_000_000
DEFAULT_EVENTS = 1_000_000
DEFAULT_SQLITE_SUPPORTERS = 200_000
DEFAULT_SQLITE_PATH = os.path.join(tempfile.gettempdir(), "crm-bench-segments.sqlite3")
CAMPAIGNS = 20
EVENTS_PER_MESSAGE = 2.0  # the generator below averages about this many


SUPPORTERS = [
    "SELECT setseed(0.42)",
    """INSERT INTO petition (slug, title, body, addressed_to, goal, consent_mode, consent_wording,
           consent_wording_version, thank_you_message, redirect_url, status, created_at, updated_at)
       SELECT 'bench-' || p, 'Bench petition ' || p, '', '', 100000, 'implied', 'Updates.', 1, '', '',
              'open', now(), now() FROM generate_series(1, 200) p""",
    "INSERT INTO tag (name, created_at) SELECT 'tag' || t, now() FROM generate_series(1, 10) t",
    """INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
           custom_fields, notes, created_at, updated_at)
       SELECT 'bench' || g || '@example.net', 'First' || g, 'Last' || (g %% 5000),
              (ARRAY['SW1A 1AA', 'sw1p 3bu', 'N1 9GU', 'N19 5AA', 'E1 6AN', 'M1 1AE', 'LS1 4AP',
                     'B1 1AA', 'G1 1XQ', 'EH1 1YZ'])[1 + floor(random() * 10)::int],
              CASE WHEN random() < 0.8 THEN 'GB' ELSE (ARRAY['FR', 'IE', 'DE'])[1 + floor(random() * 3)::int] END,
              CASE WHEN r < 0.70 THEN 'subscribed' WHEN r < 0.85 THEN 'unsubscribed'
                   WHEN r < 0.90 THEN 'bouncing' WHEN r < 0.92 THEN 'complained' ELSE 'never_subscribed' END,
              (ARRAY['petition:bench-1', 'petition:bench-2', 'import:1', 'api'])[1 + floor(random() * 4)::int],
              json_build_object('branch', 'Branch ' || (g %% 50)), '',
              now() - random() * interval '1000 days', now()
       FROM (SELECT g, random() AS r FROM generate_series(1, %(n)s) g) s""",
    # Three signing rounds, skewed towards the low petition ids (petition 1 is the big one).
    *["""INSERT INTO signature (petition_id, supporter_id, comment, source, created_at)
         SELECT 1 + floor(power(random(), 2) * 200)::int, id, '', '', now() - random() * interval '800 days'
         FROM supporter
         ON CONFLICT DO NOTHING"""] * 3,
    """INSERT INTO supporter_tag (supporter_id, tag_id)
       SELECT id, 1 + floor(random() * 10)::int FROM supporter WHERE random() < 0.3""",
]

ENGAGEMENT = [
    "SELECT setseed(0.17)",
    "TRUNCATE engagement_event, message, campaign RESTART IDENTITY CASCADE",
    """INSERT INTO campaign (name, subject, preheader, reply_to, mjml, text_body, track_opens, track_clicks,
           status, version, status_reason, total, sent_count, failed_count, unknown_count, suppressed_count,
           scheduled_at, started_at, finished_at, created_at, updated_at)
       SELECT 'Bench update ' || c, 'Update ' || c, '', '', '', '', true, true, 'sent', 1, '', 0, 0, 0, 0, 0,
              now() - c * interval '10 days', now() - c * interval '10 days', now() - c * interval '10 days',
              now() - c * interval '10 days', now()
       FROM generate_series(1, %(campaigns)s) c""",
    # Each campaign messages a random share of supporters, so messages ~= events / 2.
    """INSERT INTO message (campaign_id, supporter_id, email, status, attempts, error, created_at, sent_at)
       SELECT c.id, s.id, s.email, 'sent', 1, '', c.started_at, c.started_at + random() * interval '2 hours'
       FROM campaign c CROSS JOIN supporter s
       WHERE random() < %(share)s""",
    # 60% of supporters ever open (a fixed hash of the id); they open each message 0-6 times
    # (2.8 on average) over the following week and click with probability 0.5.
    """INSERT INTO engagement_event (message_id, supporter_id, campaign_id, kind, url, created_at)
       SELECT m.id, m.supporter_id, m.campaign_id, 'open', '', m.sent_at + random() * interval '7 days'
       FROM message m CROSS JOIN generate_series(1, 6) g
       WHERE (m.supporter_id * 2654435761 %% 100) < 60 AND random() < 0.47""",
    """INSERT INTO engagement_event (message_id, supporter_id, campaign_id, kind, url, created_at)
       SELECT m.id, m.supporter_id, m.campaign_id, 'click', 'https://example.org/act',
              m.sent_at + random() * interval '7 days'
       FROM message m
       WHERE (m.supporter_id * 2654435761 %% 100) < 60 AND random() < 0.5""",
]


def build_schema_and_supporters(n: int) -> float:
    """Fresh schema (Alembic) and generated supporters, petitions, signatures and tags; seconds."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm.extensions import db

    started = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade()
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_meta (key text PRIMARY KEY, value bigint NOT NULL)"))
        for statement in SUPPORTERS:
            conn.exec_driver_sql(statement, {"n": n} if "%(n)s" in statement else None)
        conn.execute(text("INSERT INTO bench_meta VALUES ('supporters', :n)"), {"n": n})
    return time.perf_counter() - started


def build_engagement(n: int, events: int) -> float:
    """Campaigns, messages and events sized for about `events` events; seconds taken."""
    from sqlalchemy import text

    from crm.extensions import db

    started = time.perf_counter()
    # Events come from the 60% who open, about (2.8 + 0.5) per message of theirs.
    share = min(1.0, events / (CAMPAIGNS * n * 0.6 * 3.3))
    with db.engine.begin() as conn:
        for statement in ENGAGEMENT:
            # Parameters for every statement with a % in it: psycopg unescapes %% only then.
            conn.exec_driver_sql(statement, {"campaigns": CAMPAIGNS, "share": share}
                                 if "%" in statement else None)
        conn.execute(text("DELETE FROM bench_meta WHERE key = 'events'"))
        conn.execute(text("INSERT INTO bench_meta VALUES ('events', :n)"), {"n": events})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


POSTCODES = ("SW1A 1AA", "sw1p 3bu", "N1 9GU", "N19 5AA", "E1 6AN", "M1 1AE", "LS1 4AP", "B1 1AA", "G1 1XQ",
             "EH1 1YZ")
STATUSES = ((0.70, "subscribed"), (0.85, "unsubscribed"), (0.90, "bouncing"), (0.92, "complained"),
            (1.0, "never_subscribed"))
SOURCES = ("petition:bench-1", "petition:bench-2", "import:1", "api")


def build_sqlite(n: int, events: int) -> float:
    """The same data as the PostgreSQL generator (same shares, its own seeded stream) on SQLite.

    Rows go in through SQLAlchemy Core so timestamps are stored exactly as the app stores them.
    """
    import random
    from datetime import timedelta

    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm.extensions import db
    from crm.models import Campaign, EngagementEvent, Message, Petition, Signature, Supporter, Tag, supporter_tag
    from crm.models.base import utcnow

    started = time.perf_counter()
    upgrade()
    rng = random.Random(42)
    now = utcnow()
    day = timedelta(days=1)

    def chunks(rows, size=50_000):
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def status() -> str:
        r = rng.random()
        return next(name for limit, name in STATUSES if r < limit)

    def supporters():
        for g in range(1, n + 1):
            yield {"id": g, "email": f"bench{g}@example.net", "first_name": f"First{g}", "last_name": f"Last{g % 5000}",
                   "postal_code": rng.choice(POSTCODES),
                   "country": "GB" if rng.random() < 0.8 else rng.choice(("FR", "IE", "DE")),
                   "email_status": status(), "source": rng.choice(SOURCES),
                   "custom_fields": {"branch": f"Branch {g % 50}"}, "notes": "",
                   "created_at": now - rng.random() * 1000 * day, "updated_at": now}

    def signatures():
        seen = set()
        for _ in range(3):
            for sid in range(1, n + 1):
                pid = 1 + int(rng.random() ** 2 * 200)
                if (pid, sid) not in seen:
                    seen.add((pid, sid))
                    yield {"petition_id": pid, "supporter_id": sid, "created_at": now - rng.random() * 800 * day}

    share = min(1.0, events / (CAMPAIGNS * n * 0.6 * 3.3))
    campaigns = [{"id": c, "name": f"Bench update {c}", "subject": f"Update {c}", "track_opens": True,
                  "track_clicks": True, "status": "sent", "started_at": now - c * 10 * day,
                  "finished_at": now - c * 10 * day, "created_at": now - c * 10 * day} for c in range(1, CAMPAIGNS + 1)]

    def messages():
        ident = 0
        for campaign in campaigns:
            for sid in range(1, n + 1):
                if rng.random() < share:
                    ident += 1
                    yield {"id": ident, "campaign_id": campaign["id"], "supporter_id": sid,
                           "email": f"bench{sid}@example.net", "status": "sent", "attempts": 1,
                           "created_at": campaign["started_at"],
                           "sent_at": campaign["started_at"] + rng.random() * day / 12}

    def engagement(sent):
        for m in sent:
            if (m["supporter_id"] * 2654435761) % 100 >= 60:
                continue
            for _ in range(6):
                if rng.random() < 0.47:
                    yield {"message_id": m["id"], "supporter_id": m["supporter_id"], "campaign_id": m["campaign_id"],
                           "kind": "open", "url": "", "created_at": m["sent_at"] + rng.random() * 7 * day}
            if rng.random() < 0.5:
                yield {"message_id": m["id"], "supporter_id": m["supporter_id"], "campaign_id": m["campaign_id"],
                       "kind": "click", "url": "https://example.org/act",
                       "created_at": m["sent_at"] + rng.random() * 7 * day}

    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_meta (key text PRIMARY KEY, value bigint NOT NULL)"))
        conn.execute(Petition.__table__.insert(), [
            {"slug": f"bench-{p}", "title": f"Bench petition {p}", "goal": 100000, "consent_wording": "Updates.",
             "status": "open"} for p in range(1, 201)])
        conn.execute(Tag.__table__.insert(), [{"name": f"tag{t}"} for t in range(1, 11)])
        for table, rows in ((Supporter.__table__, supporters()), (Signature.__table__, signatures())):
            for batch in chunks(rows):
                conn.execute(table.insert(), batch)
        conn.execute(supporter_tag.insert(), [{"supporter_id": sid, "tag_id": 1 + int(rng.random() * 10)}
                                              for sid in range(1, n + 1) if rng.random() < 0.3])
        conn.execute(Campaign.__table__.insert(), campaigns)
        for batch in chunks(messages()):
            conn.execute(Message.__table__.insert(), batch)
            conn.execute(EngagementEvent.__table__.insert(), list(engagement(batch)))
        conn.execute(text("INSERT INTO bench_meta VALUES ('supporters', :n), ('events', :e)"),
                     {"n": n, "e": events})
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def the_segment() -> dict:
    """The issue's five conditions."""
    from crm.extensions import db
    from crm.models import Petition, Tag

    petitions = list(db.session.scalars(db.select(Petition.id).where(Petition.slug.in_(["bench-1", "bench-2"]))))
    tag = db.session.scalar(db.select(Tag.id).where(Tag.name == "tag3"))

    def cond(field, op, value):
        return {"type": "condition", "field": field, "op": op, "value": value}

    return {"type": "group", "match": "all", "rules": [
        cond("petitions", "any_of", {"petition_ids": petitions}),
        cond("email_status", "in", ["subscribed"]),
        cond("postal_code", "starts_with", ["SW1", "N1"]),
        cond("engagement", "not_opened", {"within_days": 90}),
        cond("tags", "none_of", [tag]),
    ]}


def timed(fn, repeat: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def explain(statement) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite, of the statement as
    the app runs it: bound values (SQLite plans differently when values are inlined)."""
    from sqlalchemy import event

    from crm.extensions import db

    is_sqlite = db.engine.dialect.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "

    def explained(conn, cursor, sql, parameters, context, executemany):
        return prefix + sql, parameters

    with db.engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", explained, retval=True)
        rows = conn.execute(statement).cursor.fetchall()
    if not is_sqlite:
        return "\n".join(row[0] for row in rows)
    depth = {0: -1}
    lines = []
    for ident, parent, _, detail in rows:
        depth[ident] = depth.get(parent, -1) + 1
        lines.append("  " * depth[ident] + detail)
    return "\n".join(lines)


def _meta(key: str) -> int | None:
    from sqlalchemy import inspect, text

    from crm.extensions import db

    if not inspect(db.engine).has_table("bench_meta"):
        return None
    return db.session.scalar(text("SELECT value FROM bench_meta WHERE key = :k"), {"k": key})


def run(supporters: int | None = None, events: int | None = None, *, rebuild: bool = False,
        show_plans: bool = False, drop: bool = False, sqlite: bool = False) -> list[dict]:
    from sqlalchemy import func, select

    from crm import create_app
    from crm.extensions import db
    from crm.models import EngagementEvent, Message, Signature, Supporter
    from crm.segments import compiler
    from crm.segments.rules import validate

    sqlite = sqlite or bool(os.environ.get("BENCH_SEGMENT_SQLITE"))
    n = supporters or int(os.environ.get("BENCH_SEGMENT_SUPPORTERS",
                                         DEFAULT_SQLITE_SUPPORTERS if sqlite else DEFAULT_SUPPORTERS))
    events = events or int(os.environ.get("BENCH_SEGMENT_EVENTS", n * 10 if sqlite else DEFAULT_EVENTS))
    rebuild = rebuild or bool(os.environ.get("BENCH_SEGMENT_REBUILD"))
    show_plans = show_plans or bool(os.environ.get("BENCH_SEGMENT_EXPLAIN"))
    if sqlite:
        path = os.environ.get("BENCH_SEGMENT_SQLITE_PATH", DEFAULT_SQLITE_PATH)
        url = f"sqlite:///{path}"
    else:
        url = os.environ.get("BENCH_SEGMENT_DATABASE_URL", DEFAULT_URL)
        ensure_database(url)
    instance = tempfile.TemporaryDirectory(prefix="crm-bench-")
    app = create_app({"CRM_ENV": "testing", "SECRET_KEY": "bench", "DATABASE_URL": url,
                      "INSTANCE_PATH": instance.name})
    rows = []
    try:
        with app.app_context():
            if sqlite and (rebuild or _meta("supporters") != n or _meta("events") != events):
                db.session.remove()
                db.engine.dispose()
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)
                seconds = build_sqlite(n, events)
                rows.append({"case": "generate (SQLite)", "value": f"{seconds:.1f}", "unit": "s",
                             "notes": f"{n:,} supporters, about {events:,} events, then ANALYZE"})
            if not sqlite and (rebuild or _meta("supporters") != n):
                db.session.remove()
                seconds = build_schema_and_supporters(n)
                rows.append({"case": "generate supporters", "value": f"{seconds:.1f}", "unit": "s",
                             "notes": f"{n:,} supporters, signatures, tags via generate_series"})
            if not sqlite and (rebuild or _meta("events") != events):
                db.session.remove()
                seconds = build_engagement(n, events)
                rows.append({"case": "generate engagement", "value": f"{seconds:.1f}", "unit": "s",
                             "notes": f"about {events:,} events, then VACUUM ANALYZE"})
            counts = {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
                      for model in (Signature, Message, EngagementEvent)}
            validated = validate(the_segment())
            count_s, matched = timed(lambda: compiler.count(validated))
            sample_s, _ = timed(lambda: compiler.sample(validated, 20))
            validate_s, _ = timed(lambda: validate(the_segment()))
            rows += [
                {"case": "data", "value": f"{n:,}", "unit": "supporters",
                 "notes": f"{'SQLite' if sqlite else 'PostgreSQL'}: {counts['signature']:,} signatures, "
                          f"{counts['message']:,} messages, "
                          f"{counts['engagement_event']:,} engagement events"},
                {"case": "five-condition count", "value": f"{count_s * 1000:.0f}", "unit": "ms",
                 "notes": f"{matched:,} match; target 500 ms"},
                {"case": "five-condition sample of 20", "value": f"{sample_s * 1000:.0f}", "unit": "ms",
                 "notes": "newest first; target 100 ms"},
                {"case": "validate (3 lookups)", "value": f"{validate_s * 1000:.1f}", "unit": "ms", "notes": ""},
            ]
            if show_plans:
                print(explain(select(func.count()).select_from(Supporter.__table__)
                              .where(compiler.segment_condition(validated))))
                print(explain(select(Supporter.id).where(compiler.segment_condition(validated))
                              .order_by(Supporter.created_at.desc(), Supporter.id.desc()).limit(20)))
            db.session.remove()
            db.engine.dispose()
    finally:
        instance.cleanup()
        if drop and sqlite:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        elif drop:
            drop_database(url)
    return rows


def main(argv: list[str] | None = None) -> None:
    from bench.__main__ import print_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supporters", type=int, help=f"default {DEFAULT_SUPPORTERS:,}")
    parser.add_argument("--events", type=int, help=f"engagement events, default {DEFAULT_EVENTS:,}")
    parser.add_argument("--rebuild", action="store_true", help="regenerate even if the sizes match")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS)")
    parser.add_argument("--drop", action="store_true", help="drop the bench database afterwards")
    parser.add_argument("--sqlite", action="store_true",
                        help=f"SQLite instead (default {DEFAULT_SQLITE_SUPPORTERS:,} supporters, 10 events each)")
    args = parser.parse_args(argv)
    print_table([{"benchmark": "segments", **row} for row in run(
        args.supporters, args.events, rebuild=args.rebuild, show_plans=args.explain, drop=args.drop,
        sqlite=args.sqlite)])


if __name__ == "__main__":
    main()
