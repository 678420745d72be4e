"""Segment count and sample timings for a five-condition segment on PostgreSQL.

Data: BENCH_SEGMENT_SUPPORTERS supporters (default 1,000,000) generated inside PostgreSQL with
generate_series (seeded, so runs are comparable): 20 petitions, about 1.5 signatures per
supporter (skewed towards the first petitions), 30% of supporters tagged with one of 10 tags,
realistic spreads of email status, country, postal code and source. It lives in its own
database, BENCH_SEGMENT_DATABASE_URL (default .../bench_segments: the import bench drops and
recreates the schema of `bench`, so the two must not share it), created with psycopg in
autocommit mode when missing, and is reused while the supporter count matches
(BENCH_SEGMENT_REBUILD=1 forces a rebuild).

The segment: subscribed AND signed petition 1 or 2 in the last 365 days AND postal code starting
with SW1 or N1 AND country GB AND not tagged "tag3". Each query runs 5 times; the median is
reported, plus the EXPLAIN ANALYZE of the count with BENCH_SEGMENT_EXPLAIN=1.

    python -m bench segments
    BENCH_SEGMENT_SUPPORTERS=200000 BENCH_SEGMENT_EXPLAIN=1 python -m bench.bench_segments
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_segments"


def ensure_database(url: str) -> None:
    """CREATE DATABASE if missing (autocommit: it cannot run inside a transaction)."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


GENERATE = [
    "SELECT setseed(0.42)",
    """INSERT INTO petition (slug, title, body, addressed_to, goal, consent_mode, consent_wording,
           consent_wording_version, thank_you_message, redirect_url, status, created_at, updated_at)
       SELECT 'bench-' || p, 'Bench petition ' || p, '', '', 100000, 'implied', 'Updates.', 1, '', '',
              'open', now(), now() FROM generate_series(1, 20) p""",
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
    # One signature each, skewed towards the low petition ids; half sign a second one.
    """INSERT INTO signature (petition_id, supporter_id, comment, source, created_at)
       SELECT 1 + floor(power(random(), 2) * 20)::int, id, '', '', now() - random() * interval '800 days'
       FROM supporter""",
    """INSERT INTO signature (petition_id, supporter_id, comment, source, created_at)
       SELECT 1 + floor(random() * 20)::int, id, '', '', now() - random() * interval '800 days'
       FROM supporter WHERE random() < 0.5
       ON CONFLICT DO NOTHING""",
    """INSERT INTO supporter_tag (supporter_id, tag_id)
       SELECT id, 1 + floor(random() * 10)::int FROM supporter WHERE random() < 0.3""",
    "ANALYZE",
]


def build(n: int) -> float:
    """Fresh schema (Alembic) and generated rows; returns seconds taken."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm.extensions import db

    started = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade()
    with db.engine.begin() as conn:
        for statement in GENERATE:
            conn.exec_driver_sql(statement, {"n": n} if "%(n)s" in statement else None)
    return time.perf_counter() - started


def the_segment() -> dict:
    from crm.extensions import db
    from crm.models import Petition, Tag

    petitions = list(db.session.scalars(db.select(Petition.id).where(Petition.slug.in_(["bench-1", "bench-2"]))))
    tag = db.session.scalar(db.select(Tag.id).where(Tag.name == "tag3"))

    def cond(field, op, value):
        return {"type": "condition", "field": field, "op": op, "value": value}

    return {"type": "group", "match": "all", "rules": [
        cond("email_status", "in", ["subscribed"]),
        cond("petitions", "any_of", {"petition_ids": petitions, "since_days": 365}),
        cond("postal_code", "starts_with", ["SW1", "N1"]),
        cond("country", "in", ["GB"]),
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
    from crm.extensions import db

    compiled = statement.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params).all()
    return "\n".join(row[0] for row in rows)


def run() -> list[dict]:
    from sqlalchemy import func, inspect, select

    from crm import create_app
    from crm.extensions import db
    from crm.models import Signature, Supporter
    from crm.segments import compiler
    from crm.segments.rules import validate

    url = os.environ.get("BENCH_SEGMENT_DATABASE_URL", DEFAULT_URL)
    if url.rpartition("/")[2] == "test":
        raise SystemExit("BENCH_SEGMENT_DATABASE_URL must not be the test suite's database `test`")
    n = int(os.environ.get("BENCH_SEGMENT_SUPPORTERS", 1_000_000))
    ensure_database(url)
    app = create_app({"CRM_ENV": "testing", "SECRET_KEY": "bench", "DATABASE_URL": url,
                      "INSTANCE_PATH": tempfile.mkdtemp(prefix="crm-bench-")})
    rows = []
    with app.app_context():
        have = None
        if inspect(db.engine).has_table("segment"):  # schema at least as new as segments
            have = db.session.scalar(select(func.count()).select_from(Supporter))
        if have != n or os.environ.get("BENCH_SEGMENT_REBUILD"):
            db.session.remove()
            seconds = build(n)
            rows.append({"case": "generate", "value": f"{seconds:.1f}", "unit": "s",
                         "notes": f"{n:,} supporters via generate_series, then ANALYZE"})
        signatures = db.session.scalar(select(func.count()).select_from(Signature))
        validated = validate(the_segment())
        count_s, matched = timed(lambda: compiler.count(validated))
        sample_s, _ = timed(lambda: compiler.sample(validated, 20))
        validate_s, _ = timed(lambda: validate(the_segment()))
        notes = f"{n:,} supporters, {signatures:,} signatures; {matched:,} match"
        rows += [
            {"case": "five-condition count", "value": f"{count_s * 1000:.0f}", "unit": "ms", "notes": notes},
            {"case": "five-condition sample of 20", "value": f"{sample_s * 1000:.0f}", "unit": "ms",
             "notes": "newest first"},
            {"case": "validate (3 lookups)", "value": f"{validate_s * 1000:.1f}", "unit": "ms", "notes": ""},
        ]
        if os.environ.get("BENCH_SEGMENT_EXPLAIN"):
            print(explain(select(func.count()).select_from(Supporter.__table__)
                          .where(compiler.segment_condition(validated))))
            print(explain(select(Supporter.id).where(compiler.segment_condition(validated))
                          .order_by(Supporter.created_at.desc(), Supporter.id.desc()).limit(20)))
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table([{"benchmark": "segments", **row} for row in run()])
