#!/usr/bin/env bash
# The main job, as far as the project has come (see README.md "Status"): shows the CLI, then
# previews the DSPy tutorial's Banking77 split from the local copy of the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
DSPY=./build/bin/dspy
DATA=${DSPY_DATA_DIR:-../shared/data/banking77}
$DSPY --help
echo
$DSPY version
echo
echo "== tutorial devset (first 5 of 100), from $DATA =="
$DSPY data show banking77 --data-dir "$DATA" --split tutorial-dev --limit 5 --format tsv
echo
echo "== tutorial trainset (first 3 of 500, unlabeled) =="
$DSPY data show banking77 --data-dir "$DATA" --split tutorial-train --limit 3 --format jsonl
