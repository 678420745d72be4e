"""Write a CSV of fake supporters for the import benchmark: duplicates and bad rows included.

    python -m bench.gen_supporters [ROWS] [PATH]

About 10% of rows repeat an earlier address (a third of those in a different case) and 1% are
invalid (bad address, or an unparsable date), so the import's reject paths are exercised.
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

FIRST = ("Amira", "Ben", "Chloé", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kasia",
         "Liam", "Maya", "Noah", "Olu", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Viktor",
         "Wen", "Xavier", "Yara", "Zoë")
LAST = ("Smith", "Jones", "Okafor", "Nowak", "García", "Khan", "Müller", "Rossi", "Dubois", "Silva",
        "Ahmed", "Nguyen", "O'Brien", "Kowalski", "Patel", "Williams", "Hassan", "Brown", "Novak")
DOMAINS = ("example.org", "example.net", "mail.example.com", "posteo.example", "web.example.de")
AREAS = ("N", "E", "SW", "SE", "NW", "W", "EC", "WC", "M", "B", "LS", "G", "EH", "BS", "CF")
COUNTRIES = ("GB", "GB", "GB", "IE", "DE", "FR", "NL", "")


def postcode(rng: random.Random) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"{rng.choice(AREAS)}{rng.randint(1, 20)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"


def generate(path: str | Path, rows: int = 1_000_000, seed: int = 1) -> dict:
    """Write `rows` data rows to `path`; return what went in (unique, duplicates, invalid)."""
    rng = random.Random(seed)
    emails: list[str] = []
    stats = {"rows": rows, "duplicates": 0, "invalid": 0}
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Email", "First Name", "Last Name", "Postcode", "Country", "Opt-in", "Signed at", "Source"])
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            signed = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            roll = rng.random()
            if roll < 0.01:
                stats["invalid"] += 1
                email = f"{first.lower()}.{i}@" if rng.random() < 0.7 else f"{first.lower()}{i}@{rng.choice(DOMAINS)}"
                if not email.endswith("@"):
                    signed = "sometime last spring"
            elif roll < 0.11 and emails:
                stats["duplicates"] += 1
                email = rng.choice(emails)
                if rng.random() < 0.33:
                    email = email.upper()
            else:
                email = f"{first.lower()}.{last.lower().replace(chr(39), '')}{i}@{rng.choice(DOMAINS)}"
                email = email.encode("ascii", "ignore").decode() if rng.random() < 0.95 else email
                emails.append(email)
            writer.writerow([email, first, last, postcode(rng), rng.choice(COUNTRIES),
                             rng.choice(("yes", "no", "")), signed, "benchmark"])
    return stats


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    target = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bench_supporters.csv"
    print(generate(target, count), target)
