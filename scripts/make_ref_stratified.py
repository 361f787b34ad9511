#!/usr/bin/env python3
"""Writes tests/ref/stratified_split.json: the stratified Banking77 split `dspy compile --split
stratified` uses, computed with CPython's random.Random from shared/data/banking77/test.csv.

Run with CPython 3 (stdlib only): python3 scripts/make_ref_stratified.py [shared_dir]
tests/unit/test_stratified.c compares dspy_stratified_split's choice, row for row.

The algorithm (src/data/stratified.c): r = random.Random(seed); row indices grouped by label in
order of first appearance; each group shuffled with r in that order; the group order shuffled
with r; a round-robin over the groups gives a sequence: its first n_train entries are the
trainset, the next n_dev the devset; each set is then shuffled with r (train first).
"""
import csv
import json
import os
import random
import sys


def split(labels, n_train, n_dev, seed):
    r = random.Random(seed)
    groups, names = [], {}
    for i, l in enumerate(labels):
        if l not in names:
            names[l] = len(groups)
            groups.append([])
        groups[names[l]].append(i)
    for g in groups:
        r.shuffle(g)
    order = list(range(len(groups)))
    r.shuffle(order)
    nxt = [0] * len(groups)
    seq, want = [], n_train + n_dev
    while len(seq) < want:
        for k in order:
            if len(seq) >= want:
                break
            if nxt[k] < len(groups[k]):
                seq.append(groups[k][nxt[k]])
                nxt[k] += 1
    train, dev = seq[:n_train], seq[n_train:]
    r.shuffle(train)
    r.shuffle(dev)
    return train, dev


def main():
    shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
    with open(os.path.join(shared, "data", "banking77", "test.csv"), newline="", encoding="utf-8") as f:
        labels = [row["category"] for row in csv.DictReader(f)]
    cases = []
    for n_train, n_dev, seed in [(154, 77, 0), (200, 100, 7), (10, 5, 3), (3000, 80, 1)]:
        train, dev = split(labels, n_train, n_dev, seed)
        cases.append({"n_train": n_train, "n_dev": n_dev, "seed": seed, "train": train, "dev": dev})
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "ref", "stratified_split.json")
    with open(out, "w") as f:
        json.dump({"source": "shared/data/banking77/test.csv", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
