"""The cost of refusing repeated keys in JSON from outside (`loads_text`'s
``object_pairs_hook``): `json.loads` as before and `loads_text` as now, alternated in one
window, on bodies of nearly MAX_JSON_BYTES (4 MiB): lookup queries, and empty objects (the
most objects a body can hold: the worst case for a per-object hook); and on a sidecar.
Prints the median of each over REPEATS.
Usage: PYTHONPATH=. .venv/bin/python bench/bench_json_keys.py
"""

from __future__ import annotations

import json
import statistics
import time

from results import no_options  # bench/results.py, next to this script

from provenance.web.api import MAX_JSON_BYTES
from provenance.wire.jsontext import loads_text

REPEATS = 15


def _lookup_body() -> bytes:
    """A POST /api/v1/lookup body of just under MAX_JSON_BYTES: queries of a sha256 and a ref."""
    query = json.dumps({"sha256": "a" * 64, "ref": "photo-000001.jpg"})
    count = (MAX_JSON_BYTES - 20) // (len(query) + 2)
    return ('{"queries": [' + ", ".join([query] * count) + "]}").encode()


def main() -> int:
    sidecar = json.dumps(
        {"format": "x", "payloadType": "y", "payload": "A" * 400, "publicKey": "B" * 44,
         "signatures": [{"keyid": "c" * 64, "sig": "D" * 88}], "receipt": "E" * 2000},
        indent=2,
    ).encode()  # fmt: skip
    empty = ('{"queries": [' + ", ".join(["{}"] * (MAX_JSON_BYTES // 4 - 8)) + "]}").encode()
    bodies = {"lookup body": _lookup_body(), "empty objects": empty, "sidecar": sidecar}
    for name, data in bodies.items():
        plain: list[float] = []
        checked: list[float] = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            json.loads(data)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            loads_text(data)
            checked.append(time.perf_counter() - start)
        print(
            f"{name:13} {len(data):>9,} B  json.loads {statistics.median(plain) * 1e3:8.3f} ms"
            f"  loads_text {statistics.median(checked) * 1e3:8.3f} ms"
        )
    return 0


if __name__ == "__main__":
    no_options(__doc__)
    raise SystemExit(main())
