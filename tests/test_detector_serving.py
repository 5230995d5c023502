"""The shipped detector served by a real `prov serve`: the advisory block in
`prov verify --json` for images and videos, and `prov detect` through the RPC."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, Cli, ServerProc, start_server


def test_verify_reports_the_advisory_block(detecting: ServerProc, cli: Cli, tmp_path: Path) -> None:
    gen = Path(shutil.copy(SAMPLES / "generated_controlnet.png", tmp_path / "g.png"))
    rc, out, err = cli("verify", str(gen), "--json")
    assert rc == 11, err
    report = json.loads(out)
    det = report["detector"]
    assert report["status"] == "UNSIGNED"  # the detector never changes the verdict
    assert (
        det["model_id"] == "default"
        and 0.0 <= det["band_low"] <= det["score"] <= det["band_high"] <= 1.0
    )
    assert det["band"] in {"likely generated", "uncertain", "no generator traces found"}
    assert len(det["crops"]) >= 8 and "advisory" in det["advisory"].lower()

    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    rc, out, err = cli("verify", str(clip), "--json")
    det = json.loads(out)["detector"]
    assert [f["timestamp_seconds"] for f in det["timeline"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert all(0.0 <= f["score"] <= 1.0 for f in det["timeline"])

    rc, out, err = cli("detect", str(gen), str(clip), "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert [r["model_id"] for r in results] == ["default", "default"]
    assert "timeline" in results[1] and "timeline" not in results[0]


def _detect(cli: Cli, path: Path) -> dict[str, Any]:
    rc, out, err = cli("detect", str(path), "--json")
    assert rc == 0, err
    result: dict[str, Any]
    (result,) = json.loads(out)["results"]
    return result


@pytest.mark.slow
def test_same_file_same_score_across_calls_and_restarts(
    tmp_path: Path, cli: Cli, server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.stop()
    db = tmp_path / "det.db"
    photo = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    srv = start_server(db, "--detector", "--detector-device", "cpu")
    monkeypatch.setenv("PROV_SERVER", srv.address)
    try:
        first, second = _detect(cli, photo), _detect(cli, photo)
    finally:
        srv.stop()
    secret = db.with_name(db.name + ".detector-secret")
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    kept = secret.read_bytes()
    srv = start_server(db, "--detector", "--detector-device", "cpu")
    monkeypatch.setenv("PROV_SERVER", srv.address)
    try:
        after = _detect(cli, photo)
    finally:
        srv.stop()
    assert secret.read_bytes() == kept
    for key in ("score", "band", "band_low", "band_high", "crops"):
        assert first[key] == second[key] == after[key], key
    # A server with another database has another secret: the crops move.
    other = start_server(tmp_path / "other.db", "--detector", "--detector-device", "cpu")
    monkeypatch.setenv("PROV_SERVER", other.address)
    try:
        moved = _detect(cli, photo)
    finally:
        other.stop()
    assert moved["crops"] != first["crops"]


def test_secret_file_is_created_private_and_checked(tmp_path: Path) -> None:
    from detector.secret import load_or_create_secret
    from provenance.core.errors import DetectorError

    path = tmp_path / "s.detector-secret"
    secret = load_or_create_secret(path)
    assert len(secret) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == secret
    path.chmod(0o644)
    with pytest.raises(DetectorError, match="chmod 600"):
        load_or_create_secret(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(DetectorError, match="5 bytes, not 32"):
        load_or_create_secret(path)


def test_secret_file_created_by_two_starts_at_once_is_one_secret(tmp_path: Path) -> None:
    """Two servers of one PostgreSQL database share the secret beside the log key; started
    together, one created the file and the other read it before the 32 bytes were written
    ("holds 0 bytes"), so it served without a detector (157 of 300 pairs failed)."""
    from concurrent.futures import ThreadPoolExecutor

    from detector.secret import load_or_create_secret
    from provenance.core.errors import DetectorError

    def start(path: Path, barrier: threading.Barrier) -> bytes | DetectorError:
        barrier.wait()
        try:
            return load_or_create_secret(path)
        except DetectorError as e:
            return e

    with ThreadPoolExecutor(2) as pool:
        for i in range(100):
            path = tmp_path / f"{i}.detector-secret"
            barrier = threading.Barrier(2)
            got = list(pool.map(start, [path, path], [barrier, barrier]))
            assert got[0] == got[1] == path.read_bytes(), got
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_servers_of_one_postgresql_database_score_a_file_alike(
    tmp_path: Path, pg_url: str, cli: Cli, server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `prov serve` on two machines (each its own copy of the shared log key, as the
    deployment guide says) behind one load balancer: the same file must get the same
    crops and score from either. The secret was drawn per machine, beside the log key,
    so the two answered differently and a client saw the score change between calls."""
    from tests.conftest import PG_LOG_KEYS

    server.stop()
    photo = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    results = []
    for machine in ("a", "b"):
        key = tmp_path / machine / "log.pem"
        key.parent.mkdir()
        if machine == "b":  # the operator copies the log key made by the first server
            shutil.copy(PG_LOG_KEYS[pg_url], key)
        srv = start_server(pg_url, "--log-key", str(key), "--detector", "--detector-device", "cpu")
        if machine == "a":
            shutil.copy(key, PG_LOG_KEYS[pg_url])
        monkeypatch.setenv("PROV_SERVER", srv.address)
        try:
            results.append(_detect(cli, photo))
        finally:
            srv.stop()
    first, second = results
    for field in ("score", "band", "band_low", "band_high", "crops"):
        assert first[field] == second[field], field


def test_shared_secret_is_seeded_once_from_an_existing_file(tmp_path: Path, pg_url: str) -> None:
    """A database whose first server kept its secret beside the log key (before the
    secret moved into the database) keeps that server's scores; every later server,
    with its own file or none, takes the stored one."""
    from detector.secret import load_or_create_secret, shared_secret
    from provenance.store.postgres import PostgresStore

    kept = load_or_create_secret(tmp_path / "a.detector-secret")
    other = load_or_create_secret(tmp_path / "b.detector-secret")
    store = PostgresStore(pg_url, max_connections=2)
    try:
        assert shared_secret(store, tmp_path / "a.detector-secret") == kept
        assert shared_secret(store, tmp_path / "b.detector-secret") == kept
        assert shared_secret(store, None) == kept != other
        assert not (tmp_path / "c.detector-secret").exists()
        assert shared_secret(store, tmp_path / "c.detector-secret") == kept
        assert not (tmp_path / "c.detector-secret").exists()  # no file made for a shared one
    finally:
        store.close()


@pytest.mark.slow
def test_an_image_over_the_decode_budget_is_not_scored_downscaled(
    tmp_path: Path, cli: Cli, server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detector reads native pixels (resizing destroys the traces it looks for). A JPEG
    whose full-size decode is over --decode-budget-mb (384 MiB by default: about 13 MP,
    under a 24 MP camera's photos) was decoded at 1/2-1/8 scale and scored so, silently,
    its crops placed in the reduced image. It is now not scored, saying why; the verdict
    is as before. The detector's own estimate (16 B/px for a JPEG, no PDQ) scores one
    whose decode + PDQ estimate (30 B/px) is over the budget at full size: 24 MP camera
    photos under the default budget, here 3 MP under 64 MiB."""
    from PIL import Image

    server.stop()
    big = tmp_path / "big.jpg"  # 4.7 MP: over a 64 MiB budget at full size (~16 B/px)
    mid = tmp_path / "mid.jpg"  # 3 MP: 46 MiB at 16 B/px, 86 MiB at decode + PDQ's 30
    with Image.open(SAMPLES / "rocket.jpg") as im:
        im.convert("RGB").resize((2600, 1800)).save(big, quality=92)
        im.convert("RGB").resize((2000, 1500)).save(mid, quality=92)
    srv = start_server(
        tmp_path / "det.db", "--detector", "--detector-device", "cpu", "--decode-budget-mb", "64"
    )
    monkeypatch.setenv("PROV_SERVER", srv.address)
    try:
        rc, out, err = cli("verify", str(big), "--json")
        text_rc, text, _ = cli("verify", str(big))
        mid_rc, mid_out, mid_err = cli("verify", str(mid), "--json")
    finally:
        srv.stop()
    assert rc == 11, err
    # the person's report says it once, with the reason (before: "not run: not scored: ...")
    assert text_rc == 11 and "detector   not scored: the detector reads native" in text, text
    assert "not scored: not scored" not in text
    report = json.loads(out)
    assert report["status"] == "UNSIGNED"
    det = report["detector"]
    assert det["available"] is False and "crops" not in det, det
    assert "native" in det["note"] and "--decode-budget-mb" in det["note"], det
    assert mid_rc == 11, mid_err
    det = json.loads(mid_out)["detector"]
    assert "score" in det, det  # was not scored: "needs about 85 MiB"
    # crops placed in the native 2000x1500 pixels, not a reduced decode's
    assert max(c["x"] + c["width"] for c in det["crops"]) > 1000, det["crops"]
    assert all(c["x"] + c["width"] <= 2000 and c["y"] + c["height"] <= 1500 for c in det["crops"])


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        ("not scored: the detector failed (logged)", "the detector failed (logged)"),
        ("this server runs no detector", "this server runs no detector"),
        ("", "no reason given"),
    ],
)
def test_an_unscored_block_gives_its_reason_once(note: str, reason: str) -> None:
    """Readers print "not scored: " themselves; the server's notes already start so, and
    the web page and `prov detect` said "Not scored: not scored: ..."."""
    from detector.bands import unscored_reason

    assert unscored_reason({"available": False, "note": note}) == reason


def test_a_stale_seed_file_does_not_matter_once_the_database_holds_the_secret(
    tmp_path: Path, pg_url: str
) -> None:
    """A server whose old secret file beside the log key is unusable (empty, left by a
    start killed mid-write in an earlier version; or readable by others) still takes the
    database's secret: the file is read only to seed an empty database."""
    import os

    from detector.secret import shared_secret
    from provenance.store.postgres import PostgresStore

    store = PostgresStore(pg_url, max_connections=2)
    try:
        kept = shared_secret(store, None)
        empty = tmp_path / "empty.detector-secret"
        empty.write_bytes(b"")
        empty.chmod(0o600)
        shared = tmp_path / "shared.detector-secret"
        shared.write_bytes(os.urandom(32))
        shared.chmod(0o644)
        assert shared_secret(store, empty) == kept  # was DetectorError: holds 0 bytes
        assert shared_secret(store, shared) == kept  # was DetectorError: readable by others
    finally:
        store.close()


@pytest.mark.slow
def test_a_detector_slower_than_its_deadline_costs_the_score_not_the_verdict(
    tmp_path: Path, cli: Cli, server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server waited for the detector's score without a deadline: a stuck device or a
    wedged worker held the call and its decode slot for good, and a few such calls starved
    every upload. With `--detector-timeout` the verdict comes back without a score, the
    block saying why, and the slot is given back. The detector is made slower than its
    deadline honestly: a real 12 MP photo (cutting its crops alone takes longer) against
    a 1 ms deadline. With one decode slot, the calls after it (gRPC and the web page's
    POST /api/v1/verify) are answered too, and a video is not scored either."""

    import httpx
    from PIL import Image

    from tests.conftest import read_line

    server.stop()
    big = tmp_path / "big.jpg"  # 12 MP
    with Image.open(SAMPLES / "rocket.jpg") as im:
        im.convert("RGB").resize((4000, 3000)).save(big, quality=92)
    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    srv = start_server(
        tmp_path / "det.db",
        "--detector",
        "--detector-device",
        "cpu",
        "--detector-timeout",
        "0.001",
        "--max-decodes",
        "1",
        "--decode-wait-seconds",
        "60",
        "--http",
        "127.0.0.1:0",
    )
    monkeypatch.setenv("PROV_SERVER", srv.address)
    try:
        web = read_line(srv.proc, "web on ", timeout=60)
        rc, out, err = cli("verify", str(big), "--json")
        text_rc, text, _ = cli("verify", str(big))
        vid_rc, vid_out, vid_err = cli("verify", str(clip), "--json")
        with httpx.Client(base_url=web, timeout=120) as c:
            r = c.post("/api/v1/verify", files={"file": (big.name, big.read_bytes())})
    finally:
        srv.stop()
    assert rc == 11, err
    report = json.loads(out)
    assert report["status"] == "UNSIGNED"  # the verdict stands
    det = report["detector"]
    assert det["available"] is False and "score" not in det, det
    assert "did not answer within 0.001 s" in det["note"], det
    assert "--detector-timeout" in det["note"], det
    assert text_rc == 11 and "detector   not scored: the detector did not answer" in text, text
    assert vid_rc == 11, vid_err
    vid = json.loads(vid_out)["detector"]
    assert "did not answer within 0.001 s" in vid["note"], vid
    assert all(f["score"] is None for f in vid.get("timeline", [])), vid
    assert r.status_code == 200, r.text[:400]
    assert r.json()["status"] == "UNSIGNED"
    assert "did not answer within 0.001 s" in r.json()["detector"]["note"], r.json()["detector"]
    # four calls in turn through one decode slot: each was answered (above) and so gave
    # it back (a slot kept would leave the next waiting --decode-wait-seconds, then refused)
