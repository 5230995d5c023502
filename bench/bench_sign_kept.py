"""`prov sign` of a new file on a device folder holding many kept sidecars
(``PROV_HOME/sidecars/``: sidecars that could not be written beside their files), for
the code of one or two checkouts, alternated round by round in the same window.

Signing a file with no ``FILE.prov`` looks among the kept sidecars for a logged claim
of its bytes (`clients.device.signing.SigningFolder._kept_for`), so a sidecar written
there once is not signed and logged a second time. This bench starts a real `prov
serve`, enrolls a device, signs one photo whose ``FILE.prov`` cannot be written (its
logged sidecar is kept), then adds kept sidecars of other bytes (claims of the device
key, each for another SHA-256, with the photo's receipt) up to each ``--kept`` count.
Each round and checkout runs in a fresh process: ``--signs`` commands `prov sign NEW`
(in-process, each a JPEG of bytes no kept sidecar binds: signed, logged), timed one by
one, then one `prov sign` of the photo whose logged sidecar is kept (found, written
beside it, nothing signed; its ``FILE.prov`` is removed after). The first command of a
checkout that keeps an index of the kept sidecars (``sidecars/index.json``) in a
round is timed apart (``first_s``; for every checkout): the index is removed before
each round, so that command builds it. Prints, for each count and checkout, the
median of the other new files (``median_s``) and of the kept photo (``kept_hit_s``);
with ``--old``, writes the rate ratio of ``median_s``, this checkout's over the old
one's (bench/results.py).

Usage: python bench/bench_sign_kept.py [--kept 1000 10000] [--signs 3] [--rounds 2]
       [--old /work/main]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from results import Ratio, write_results  # bench/results.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the checkout is not installed
    sys.path.insert(0, str(ROOT))
from prov_server import enrolled_server  # noqa: E402  # bench/prov_server.py

from clients.cli import main as prov  # noqa: E402
from clients.device import DeviceHome  # noqa: E402
from provenance.core.argtypes import positive_int  # noqa: E402
from provenance.core.claims import HardBinding  # noqa: E402
from provenance.wire.sidecar import Sidecar, decode_sidecar, encode_sidecar  # noqa: E402
from tests.conftest import sign_claim  # noqa: E402

PHOTO = ROOT / "clients" / "samples" / "rocket.jpg"
#: Seconds after which the index keeps a kept sidecar's record in its file
#: (`clients.device.keptindex.SETTLED_NS`, with a margin): a file written just before is
#: read again by each command until then.
SETTLED_S = 3.5

#: Run in the child with the checkout first on sys.path: argv = the photo whose logged
#: sidecar is kept, then the new files; prints the seconds of each `prov sign`, the
#: kept photo's last, after one untimed `prov sign` of a text file (its imports).
CHILD = """
import json, os, sys, time
from pathlib import Path
from clients.cli import main as prov
kept_photo, files = sys.argv[1], sys.argv[2:]
prov(["sign", kept_photo + ".txt"])  # untimed: the imports (not media: nothing signed)
times = []
for f in [*files, kept_photo]:
    t = time.perf_counter()
    rc = prov(["sign", f])
    times.append(time.perf_counter() - t)
    if rc != 0:
        raise SystemExit(f"prov sign {f} exited {rc}")
os.unlink(kept_photo + ".prov")
print(json.dumps(times))
"""


def add_kept(home: DeviceHome, first: Sidecar, upto: int) -> None:
    """Fill ``home``'s sidecars/ up to ``upto`` kept sidecars: claims of the device key
    for other bytes (a SHA-256 of the sequence), named by their sequence (2, 3, ...: the
    next claim signed is numbered past them), each with ``first``'s receipt (which binds
    ``first`` alone)."""
    key = home.load_key(b"bench")
    have = sorted(home.sidecar_dir.glob("*.prov"))
    claim = first.claim
    for n in range(len(have), upto):
        seq = n + 1
        other = replace(
            claim,
            sequence=seq,
            hard_binding=HardBinding(sha256=hashlib.sha256(b"%d" % seq).digest()),
        )
        kept = replace(first, signed_claim=sign_claim(key, other))
        (home.sidecar_dir / f"{seq:012d}.prov").write_bytes(encode_sidecar(kept))


def timed(code: Path, kept_photo: Path, files: list[Path]) -> list[float]:
    """Seconds of each `prov sign` run by the checkout ``code`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(code)!r})\n" + CHILD]
        + [str(kept_photo), *map(str, files)],
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{code}: {done.stderr[-2000:]}")
    times: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return times


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kept", type=positive_int, nargs="+", default=[1000, 10000])
    p.add_argument("--signs", type=positive_int, default=3, help="new files signed a round")
    p.add_argument("--rounds", type=positive_int, default=2)
    p.add_argument("--old", type=Path, help="another checkout, alternated with this one")
    a = p.parse_args()
    if a.signs < 2:
        p.error("--signs: at least 2 (the first new file of a round is timed apart)")
    codes = [ROOT, *([a.old.resolve()] if a.old else [])]
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp, enrolled_server(Path(tmp)):
        work = Path(tmp)
        home = DeviceHome(work / "dev")
        photo = Path(shutil.copy(PHOTO, work / "kept.jpg"))
        side = photo.with_name(photo.name + ".prov")
        side.mkdir()  # FILE.prov cannot be written: the logged sidecar is kept
        assert prov(["sign", str(photo)]) == 0
        side.rmdir()
        Path(f"{photo}.txt").write_text("not media")
        first = decode_sidecar((home.sidecar_dir / "000000000001.prov").read_bytes())
        assert first.receipt is not None
        made = 0
        for kept in sorted(a.kept):
            add_kept(home, first, kept)
            time.sleep(SETTLED_S)  # as sidecars kept over time are: none just written
            per: dict[Path, list[float]] = {c: [] for c in codes}
            built: dict[Path, list[float]] = {c: [] for c in codes}
            hits: dict[Path, list[float]] = {c: [] for c in codes}
            for r in range(a.rounds):
                for code in codes:
                    (home.sidecar_dir / "index.json").unlink(missing_ok=True)
                    files = []
                    for _ in range(a.signs):
                        made += 1
                        f = work / f"new-{made}.jpg"
                        f.write_bytes(PHOTO.read_bytes() + b"%d" % made)
                        files.append(f)
                    times = timed(code, photo, files)
                    built[code].append(times[0])
                    per[code] += times[1:-1]
                    hits[code].append(times[-1])
                    print(f"kept {kept} round {r} {code}: {[f'{t:.3f}' for t in times]}")
            for code in codes:
                row = {
                    "kept": kept,
                    "code": str(code),
                    "first_s": statistics.median(built[code]),
                    "median_s": statistics.median(per[code]),
                    "kept_hit_s": statistics.median(hits[code]),
                }
                rows.append(row)
                print(json.dumps(row))
            if a.old:
                new, old = (statistics.median(per[c]) for c in codes)
                ratios.append(
                    Ratio(
                        f"prov sign of a new file, {kept} kept sidecars",
                        1 / new,
                        f"the same, --old {codes[1]}",
                        1 / old,
                        "commands/s",
                    )
                )
    if ratios:
        write_results("sign_kept", ratios, note=json.dumps(rows))


if __name__ == "__main__":
    main()
