#!/usr/bin/env python3
"""Extracts the expected message lists of the adapter conformance cases from the shared spec.

Reads ../shared/spec/conformance.md (the contract written from DSPy's test literals) and writes
tests/ref/adapter_messages.json: {"CC-04": [...messages...], "CC-05": ..., "CC-05-v26": ...,
"CC-06": ..., "CC-07": ..., "CC-08": ..., "CC-17a": ..., "CC-17b": ..., "CC-20": ...}.
Only copies the ```json blocks; nothing is computed, so the C tests compare against the spec's
bytes. Run once: python3 scripts/make_ref_adapter.py [path/to/conformance.md]
"""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
spec = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "spec" / "conformance.md"
text = spec.read_text(encoding="utf-8")

sections = re.split(r"^## (CC-\d+)", text, flags=re.M)
blocks = {}
for i in range(1, len(sections), 2):
    name, body = sections[i], sections[i + 1]
    found = re.findall(r"```json\n(.*?)\n```", body, flags=re.S)
    blocks[name] = [json.loads(b) for b in found]

out = {
    "CC-04": blocks["CC-04"][0],
    "CC-05": blocks["CC-05"][0],
    "CC-05-v26": blocks["CC-05"][1],
    "CC-06": blocks["CC-06"][0],
    "CC-07": blocks["CC-07"][0],
    "CC-08": blocks["CC-08"][0],
    "CC-17a": blocks["CC-17"][0],
    "CC-17b": blocks["CC-17"][1],
    "CC-20": blocks["CC-20"][0],
}
dest = root / "tests" / "ref" / "adapter_messages.json"
dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"wrote {dest} ({len(out)} cases)")
