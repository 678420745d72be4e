"""Staff sign-in cost: scrypt hashing dominates, by design (it slows password guessing)."""

from __future__ import annotations

import time

from werkzeug.security import check_password_hash, generate_password_hash


def run() -> list[dict]:
    digest = generate_password_hash("correct-horse-battery", method="scrypt")
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        check_password_hash(digest, "correct-horse-battery")
    per_check = (time.perf_counter() - started) / rounds * 1000
    return [{"case": "scrypt password check", "value": f"{per_check:.1f}", "unit": "ms",
             "notes": f"mean of {rounds}"}]
