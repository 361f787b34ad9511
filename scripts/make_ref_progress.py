#!/usr/bin/env python3
"""Prints the tqdm reference lines used in tests/unit/test_progress.c, as C initializers.

Needs tqdm (Debian: apt-get install python3-tqdm, then run with /usr/bin/python3). Made with
tqdm 4.64.1, whose format_meter matches current tqdm for the default bar format.
Each case is tqdm.format_meter(n, total, elapsed, ncols, prefix=desc) with total 0 -> None
(unknown) and ncols 0 -> None (unknown width, 10-cell bar).
"""
import json

from tqdm import tqdm

CASES = [
    ("Average Metric: 51.00 / 99 (51.5%)", 100, 100, 35.84, 0),
    ("", 0, 100, 0.0, 0),
    ("Average Metric: 0.00 / 0 (0%)", 0, 100, 0.0, 0),
    ("Average Metric: 1.00 / 1 (100.0%)", 1, 100, 0.42, 0),
    ("", 37, 100, 12.3, 0),
    ("Bootstrapped", 3, 7, 2.0, 0),
    ("Processing", 42, 0, 3.5, 0),
    ("", 0, 0, 0.0, 0),
    ("slow", 3, 10, 7.5, 0),
    ("hours", 500, 1000, 4000.0, 0),
    ("days", 1, 3, 90061.0, 0),
    ("one per second", 5, 10, 5.0, 0),
    ("fast", 123456, 1000000, 0.5, 0),
    ("done", 100, 100, 59.99, 0),
    ("over", 105, 100, 10.0, 0),
    ("colon: ", 5, 10, 1.0, 0),
    ("Average Metric: 10.00 / 20 (50.0%)", 20, 100, 5.0, 80),
    ("Average Metric: 10.00 / 20 (50.0%)", 20, 100, 5.0, 120),
    ("Average Metric: 10.00 / 20 (50.0%)", 20, 100, 5.0, 30),
    ("\u8a55\u4fa1 \u00e9", 2, 8, 1.0, 40),
    ("", 1, 3, 1.0, 50),
    ("Processing", 42, 0, 3.5, 20),
]


def c_str(s):
    return json.dumps(s, ensure_ascii=False)


for desc, n, total, elapsed, ncols in CASES:
    line = tqdm.format_meter(n, total or None, elapsed, ncols=ncols or None, prefix=desc)
    print(f"    {{{c_str(desc)}, {n}, {total}, {elapsed!r}, {ncols}, {c_str(line)}}},")
