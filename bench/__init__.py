"""Benchmarks: each module in bench/ defines run() -> list of result rows; `make bench` prints them."""
