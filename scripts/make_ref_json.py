#!/usr/bin/env python3
"""Writes tests/ref/json_vectors.txt: CPython's repr(float), json.dumps and repr() outputs that
test_json.c compares byte for byte. Stdlib only; run with any CPython 3.8+.

Line formats (tab-separated, strings JSON-encoded so tabs/newlines survive):
  F <16-hex bits of the double> <repr(x)>
  J <input json text> <flags> <json.dumps(...) output>
  R <input json text> <repr(python value)>
"""
import json, math, random, struct, sys, os

out = []
rng = random.Random(1234)
floats = [0.1, 0.5, 1.0, 100.0, 1e16, 1e15, 123456789012345678.0, 1e-4, 1e-5, 0.00012345,
          1.5e-7, 2.5e300, -0.0, 0.0, 1/3, 2/3, 5e-324, 1.7976931348623157e308, 0.9, 0.7,
          1e-05 * 3, 9999999999999998.0, 1234.5, -42.25, 3.14159, 1e22, 1e21, 0.30000000000000004]
for _ in range(300):
    floats.append(struct.unpack('<d', struct.pack('<Q', rng.getrandbits(64)))[0])
for _ in range(300):
    floats.append(rng.random() * 10 ** rng.randint(-8, 20))
for x in floats:
    if math.isnan(x) or math.isinf(x):
        continue
    bits = struct.unpack('<Q', struct.pack('<d', x))[0]
    out.append('F\t%016x\t%s' % (bits, repr(x)))

docs = [
    '{"a": 1, "b": [1, 2.5, "x"], "c": {"d": null, "e": true, "f": false}}',
    '{"z": 1, "a": 2, "m": {"y": [], "b": {}}}',
    '["caf\\u00e9", "\\u20ac", "\\ud83d\\ude00", "tab\\there", "nl\\nq\\"b\\\\", "\\u0001\\u001f\\u007f"]',
    '{"answers": ["A1", "A2"], "scores": [0.1, 0.9]}',
    '[1e16, 1e-5, 100.0, 0.1, -0.0, 1234567890123456789]',
    '{"text": "What if there is an error on the exchange rate?", "label": "card_arrival"}',
    '{"s": "it\'s", "d": "say \\"hi\\"", "both": "\'\\"", "nbsp": "a\\u00a0b", "u2028": "x\\u2028y"}',
    '[]', '{}', '""', '"plain"', '[[], {}, [[1]], {"k": []}]',
]
flagsets = {
    0: {},
    1: {'ensure_ascii': False},
    2: {'separators': (',', ':')},
    3: {'separators': (',', ':'), 'ensure_ascii': False},
    4: {'sort_keys': True},
    6: {'sort_keys': True, 'separators': (',', ':')},
    2 << 8: {'indent': 2},
    (2 << 8) | 1: {'indent': 2, 'ensure_ascii': False},
}
for d in docs:
    v = json.loads(d)
    for fl, kw in flagsets.items():
        out.append('J\t%s\t%d\t%s' % (json.dumps(d), fl, json.dumps(json.dumps(v, **kw))))
    out.append('R\t%s\t%s' % (json.dumps(d), json.dumps(repr(v))))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'ref', 'json_vectors.txt')
with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(out) + '\n')
print('wrote', len(out), 'vectors to', path)
