"""Supporter import end to end: rows/s and peak memory on PostgreSQL and SQLite.

Each case runs in its own process (so ru_maxrss is that import's peak) on a fresh schema:
PostgreSQL in database `bench_import` (created if missing; its public schema is DROPPED and
rebuilt, so never point it at a database anything else uses, and never the test suite's `test`)
from BENCH_DATABASE_URL, SQLite in a temp file. The file comes from bench/gen_supporters.py: 10%
duplicates, 1% invalid rows, a consent column; a petition is chosen with its wording, so
signatures and consent events are written too. Sizes: BENCH_IMPORT_ROWS (default 1,000,000)
for PostgreSQL, BENCH_IMPORT_SQLITE_ROWS (default 200,000) for SQLite. BENCH_IMPORT_WEBHOOK=1
registers a webhook endpoint for supporter.subscribed, so each subscribed row also stores its
outbound event (without one, none is stored).

    python -m bench import            # both cases, printed as the bench table
    python -m bench.bench_import pg   # one case, JSON on stdout
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/bench_import"
CACHE = Path(tempfile.gettempdir()) / "crm-bench-import"


def data_file(rows: int) -> Path:
    from bench.gen_supporters import generate

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"supporters-{rows}.csv"
    if not path.exists():
        generate(path.with_suffix(".tmp"), rows)
        path.with_suffix(".tmp").rename(path)
    return path


def ensure_pg_database(url: str) -> None:
    """CREATE DATABASE <name> if it does not exist (autocommit: it cannot run in a transaction)."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_case(case: str, rows: int) -> dict:
    """Import `rows` rows into a fresh schema in this process; return timings and counts."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from crm import create_app
    from crm.extensions import db
    from crm.imports import service
    from crm.imports.engine import run_import
    from crm.models import Petition

    path = data_file(rows)
    instance = tempfile.mkdtemp(prefix="crm-bench-")
    if case == "pg":
        url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG)
        if url.rpartition("/")[2] == "test":
            raise SystemExit("BENCH_DATABASE_URL must not be the test suite's database `test`")
        ensure_pg_database(url)
    else:
        url = f"sqlite:///{instance}/bench.sqlite3"
    app = create_app({"CRM_ENV": "testing", "SECRET_KEY": "bench", "DATABASE_URL": url,
                      "INSTANCE_PATH": instance})
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        petition = Petition(slug="bench", title="Bench petition", status="open",
                            consent_wording="You will receive periodic email updates.")
        db.session.add(petition)
        db.session.commit()
        from outbound import dispatch
        from outbound import service as outbound

        if os.environ.get("BENCH_IMPORT_WEBHOOK") == "1":  # an endpoint hears supporter.subscribed
            outbound.save_settings(True, None)
            outbound.create_endpoint({"url": "http://127.0.0.1:9/hook", "events": ["supporter.subscribed"]}, None)
        else:
            dispatch.store_wanted()  # none: the import stores no outbound events
        started = time.perf_counter()
        job = service.register_file(str(path))
        service.configure(job, job.mapping, petition_id=petition.id, petition_wording=True)
        db.session.commit()
        job = run_import(job)
        elapsed = time.perf_counter() - started
        counts = {name: getattr(job, f"{name}_count") for name in ("created", "updated", "unchanged", "rejected")}
        signatures = db.session.scalar(text("SELECT count(*) FROM signature"))
        events = db.session.scalar(text("SELECT count(*) FROM consent_event"))
        announced = db.session.scalar(text("SELECT count(*) FROM outbound_event"))
    return {"case": case, "rows": job.total_rows, "seconds": elapsed, **counts, "signatures": signatures,
            "consent_events": events, "outbound_events": announced,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run() -> list[dict]:
    results = []
    for case, rows in (("pg", int(os.environ.get("BENCH_IMPORT_ROWS", 1_000_000))),
                       ("sqlite", int(os.environ.get("BENCH_IMPORT_SQLITE_ROWS", 200_000)))):
        data_file(rows)  # generate outside the timed child
        out = subprocess.run([sys.executable, "-m", "bench.bench_import", case, str(rows)],
                             capture_output=True, text=True, check=False,
                             cwd=Path(__file__).resolve().parent.parent)
        if out.returncode != 0:
            results.append({"case": f"{case}: failed", "value": "", "unit": "",
                            "notes": (out.stderr.strip().splitlines() or ["?"])[-1][:120]})
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        name = "PostgreSQL" if case == "pg" else "SQLite"
        notes = (f"{r['rows']:,} rows in {r['seconds']:.1f}s: {r['created']:,} created, {r['rejected']:,} rejected, "
                 f"{r['signatures']:,} signatures, {r['consent_events']:,} consent events, "
                 f"{r['outbound_events']:,} outbound events")
        results.append({"case": f"{name} import rate", "value": f"{r['rows'] / r['seconds']:,.0f}",
                        "unit": "rows/s", "notes": notes})
        results.append({"case": f"{name} import peak memory", "value": f"{r['maxrss_mb']:.0f}", "unit": "MB",
                        "notes": "ru_maxrss of the importing process"})
    return results


if __name__ == "__main__":
    result = run_case(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
    print(json.dumps(result))
