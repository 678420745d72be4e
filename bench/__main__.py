"""Run every benchmark in bench/ (or those named on the command line) and print one table."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def discover(names: list[str]) -> list[str]:
    found = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("bench_"))
    return [n for n in found if not names or n in names or n.removeprefix("bench_") in names]


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("No benchmarks ran.")
        return
    columns = ["benchmark", "case", "value", "unit", "notes"]
    text = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def main(argv: list[str]) -> int:
    rows = []
    for name in discover(argv):
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        for row in module.run():
            rows.append({"benchmark": name.removeprefix("bench_"), **row})
        print(f"{name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
