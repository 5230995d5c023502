"""The shipped detector: weights and metadata, golden scores, reports, errors, CLI."""

from __future__ import annotations

import io
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from detector.cli import app
from detector.infer import ADVISORY, LIKELY_GENERATED, NO_TRACES, UNCERTAIN, Detector
from detector.model import build_network
from detector.registry import REGISTRY
from detector.serving import ServerDetector
from detector.weights import apply_state, load_weights, save_weights
from provenance.core.errors import MediaError, MediaTooLargeError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SECRET = b"golden-secret"

#: (fixture path, label, score) of the shipped default model with SECRET and the file's
#: name as request key, measured on CPU in float32 (identical with 1 and 2 threads).
#: Tolerance 1e-4 absolute: CPU kernels may sum in another order for another batch size or
#: instruction set. A regression check, not a claim of accuracy. Versions 5-7 re-encode each
#: image as JPEG q90 (Pillow) before cropping, so another libjpeg build may also move them.
#: Calibration: the band policy of `scripts/recalibrate_detector.py` (version 7; its score is
#: version 6's, only the band weighs the noise level).
GOLDEN: list[tuple[str, str, float]] = [
    ("detector/real/pypi/imgaug_quokka.jpg", "real", 0.3854701325811492),
    ("detector/real/afhq/ref_cat_flickr_cat_000495.jpg", "real", 0.3476605907659923),
    ("detector/generated/stylegan2_church/sg2_church_00.png", "generated", 0.3325373953437741),
    ("detector/generated/ldm/ldm_a_painting_of_a_fire_00.png", "generated", 0.4289682869688193),
]
GOLDEN_TOL = 1e-4


@pytest.fixture(scope="module")
def det() -> Iterator[Detector]:
    d = Detector.load("default", device="cpu", secret=SECRET)
    yield d
    d.close()


def _rgb(rel: str) -> np.ndarray:
    with Image.open(FIXTURES / rel) as im:
        return np.asarray(im.convert("RGB"))


def test_shipped_weights_load_and_match_metadata() -> None:
    path = REGISTRY["default"].shipped
    assert path is not None and path.stat().st_size < 3_000_000
    state, meta = load_weights(path)  # checks the tensors against their digest
    net = build_network(meta.arch, meta.arch_kwargs)
    apply_state(net, state, str(path))  # exact key names and shapes
    args = json.loads(path.with_suffix(".json").read_text())
    assert args["tensors_sha256"] == meta.tensors_sha256
    assert args["model_id"] == meta.model_id == "default"
    cal = meta.calibration
    assert cal.fitted and cal.slope > 0 and 0 < cal.threshold_low <= cal.threshold_high < 1
    assert cal.held_out_images == args["calibration"]["held_out_images"] > 100
    assert cal.threshold_high == args["calibration"]["threshold_high"]
    assert meta.preprocess.patch_size == 64
    # Trained on the 70% of sources the protocol trains on.
    summary = meta.training["summary"]
    assert summary["train_images"] == len(
        json.loads(path.with_name("default-trainfiles.json").read_text())["trained_on"]
    )
    assert summary["train_real"] > 900 and summary["train_generated"] > 900


def test_golden_scores(det: Detector) -> None:
    for rel, _, expected in GOLDEN:
        got = det.score_image(_rgb(rel), Path(rel).name.encode()).score
        assert got == pytest.approx(expected, abs=GOLDEN_TOL), rel


def test_report_shape_ranges_and_advisory(det: Detector) -> None:
    rgb = _rgb(GOLDEN[0][0])
    r = det.score_image(rgb, b"k")
    h, w = rgb.shape[:2]
    assert len(r.crops) == det.model.meta.preprocess.crops == 64
    assert all(
        0 <= c.x <= w - 64 and 0 <= c.y <= h - 64 and c.width == c.height == 64 for c in r.crops
    )
    assert all(0.0 <= c.score <= 1.0 for c in r.crops)
    assert 0.0 <= r.band_low <= r.score <= r.band_high <= 1.0
    assert r.band in (LIKELY_GENERATED, UNCERTAIN, NO_TRACES)
    assert r.model_id == "default" and r.model_version
    assert r.advisory == ADVISORY and "never proves" in r.advisory
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d and d["crops"][0].keys() == {
        "x",
        "y",
        "width",
        "height",
        "score",
    }


def test_no_nan_on_extreme_inputs(det: Detector) -> None:
    for rgb in (
        np.zeros((64, 64, 3), np.uint8),
        np.full((80, 100, 3), 255, np.uint8),
        np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8),
    ):
        r = det.score_image(rgb, b"x")
        assert np.isfinite([r.score, r.band_low, r.band_high]).all()


def test_same_secret_same_result_other_secret_other_crops(det: Detector) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    first = det.score_image(rgb, b"request")
    with Detector.load("default", device="cpu", secret=SECRET) as again:
        assert again.score_image(rgb, b"request") == first
    with Detector.load("default", device="cpu", secret=b"another secret") as other:
        moved = other.score_image(rgb, b"request")
    assert [(c.x, c.y) for c in moved.crops] != [(c.x, c.y) for c in first.crops]
    assert det.score_image(rgb, b"request 2").crops != first.crops


def test_batched_and_concurrent_scoring_match_single(det: Detector) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (100 + 20 * i, 120, 3), dtype=np.uint8) for i in range(6)]
    images.append(np.zeros((70, 70, 3), np.uint8))
    keys = [bytes([i]) for i in range(7)]
    single = [det.score_image(im, k).score for im, k in zip(images, keys, strict=True)]
    batched = [r.score for r in det.score_images(images, keys)]
    assert batched == pytest.approx(single, abs=1e-5)
    out: dict[int, float] = {}

    def work(i: int) -> None:
        out[i] = det.score_image(images[i], keys[i]).score

    threads = [threading.Thread(target=work, args=(i,)) for i in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(7)] == pytest.approx(single, abs=1e-5)


def test_own_weights_file_reports_its_own_model_id(det: Detector, tmp_path: Path) -> None:
    path = tmp_path / "mine.safetensors"
    meta = replace(det.model.meta, model_id="mine", version="7")
    save_weights(path, det.model.net, meta)
    with Detector.load("default", weights=path, device="cpu", secret=SECRET) as d:
        r = d.score_image(_rgb(GOLDEN[0][0]), b"k")
    assert r.model_id == "mine" and r.model_version == "7"
    assert r.score == det.score_image(_rgb(GOLDEN[0][0]), b"k").score  # the same tensors


def test_served_band_noise_term_is_what_the_band_policy_fits(det: Detector, tmp_path: Path) -> None:
    # Version 7's band: an image cleaner than noise_ref (its log noise level measured on
    # the crops the server scored) needs more evidence for "likely generated". The score
    # does not move, and the band policy's rule (score_files, likely_generated) must
    # decide exactly as the server does, or the fitted rates would not hold as served.
    from detector.calibrate import likely_generated
    from detector.data import Sample
    from detector.policy import score_files

    rel = GOLDEN[1][0]
    data = (FIXTURES / rel).read_bytes()
    plain = det.score_bytes(data)
    # Thresholds that call this photo "likely generated" without the noise term.
    bare = replace(
        det.model.meta.calibration, threshold_low=0.01, threshold_high=plain.score - 0.05
    )
    sample = Sample(FIXTURES / rel, 0, "real", "real", rel, "-", "afhq", "pet")
    bands = {}
    for coef in (0.0, 5.0):
        cal = replace(bare, noise_coef=coef, noise_ref=3.0)  # 3.0: 20 grey levels
        path = tmp_path / f"noise-{coef}.safetensors"
        save_weights(path, det.model.net, replace(det.model.meta, calibration=cal))
        with Detector.load("default", weights=path, device="cpu", secret=SECRET) as d:
            served = d.score_bytes(data)
            (scored,), _ = score_files(d.model, [sample], SECRET, 64)
            # A video's band (frames of the same photo) weighs the frames' noise terms.
            rgb = _rgb(rel)
            video = ServerDetector(d).score_video([(0.0, rgb), (1.0, rgb)], b"video")
        assert served.score == plain.score and scored.noise < 3.0
        policy = likely_generated(cal, np.array([scored.logit]), np.array([scored.noise]))[0]
        assert (served.band == LIKELY_GENERATED) == bool(policy)
        assert video["band"] == served.band
        bands[coef] = served.band
    assert bands == {0.0: LIKELY_GENERATED, 5.0: UNCERTAIN}


@pytest.mark.filterwarnings("error")
def test_extreme_calibrations_score_in_range_or_refuse_without_warnings(
    det: Detector, tmp_path: Path
) -> None:
    # A calibration slope of 1e300 gives finite crop logits near 1e300 whose spread
    # overflowed np.std (RuntimeWarning, band_high nan before); one of 1.7e308 takes them
    # past float64 (RuntimeWarning, then "the model produced a non-finite score").
    from provenance.core.errors import DetectorError

    rgb = _rgb(GOLDEN[0][0])
    cal = det.model.meta.calibration
    for slope, intercept in ((1e300, 0.0), (1e300, -1e300), (-1e300, 1e300)):
        path = tmp_path / "steep.safetensors"
        meta = replace(det.model.meta, calibration=replace(cal, slope=slope, intercept=intercept))
        save_weights(path, det.model.net, meta)
        with Detector.load("default", weights=path, device="cpu", secret=SECRET) as d:
            r = d.score_image(rgb, b"k")
            video = ServerDetector(d).score_video([(0.0, rgb), (1.0, rgb)], b"v")
        assert 0.0 <= r.band_low <= r.score <= r.band_high <= 1.0, (slope, r)
        assert all(0.0 <= c.score <= 1.0 for c in r.crops)
        assert 0.0 <= video["band_low"] <= video["score"] <= video["band_high"] <= 1.0
    path = tmp_path / "past.safetensors"
    save_weights(
        path, det.model.net, replace(det.model.meta, calibration=replace(cal, slope=1.7e308))
    )
    with Detector.load("default", weights=path, device="cpu", secret=SECRET) as d:
        with pytest.raises(DetectorError, match=r"slope 1.7e\+308.* beyond float64"):
            d.score_image(rgb, b"k")


def test_a_video_too_small_to_score_speaks_of_its_frames(det: Detector) -> None:
    """The detector note of a video whose frames are under the detector's least side
    said "image is 2x2 pixels": a video has frames, and the note says so."""
    tiny = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(MediaError) as caught:
        ServerDetector(det).score_video([(0.0, tiny), (1.0, tiny)], b"v")
    said = str(caught.value)
    assert "the video's frames are 2x2 pixels" in said and "image" not in said, said
    with pytest.raises(MediaError, match="^image is 2x2 pixels"):
        det.score_image(tiny, b"k")  # an image is still an image


def test_weights_written_before_the_noise_term_still_load() -> None:
    from detector.config import ModelMeta

    meta = REGISTRY["default"].shipped
    assert meta is not None
    raw = json.loads(load_weights(meta)[1].to_json())
    for key in ("noise_coef", "noise_ref"):
        raw["calibration"].pop(key)
    old = ModelMeta.from_json(json.dumps(raw))
    assert (old.calibration.noise_coef, old.calibration.noise_ref) == (0.0, 0.0)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def test_malformed_huge_and_small_images_give_clear_errors(det: Detector) -> None:
    with pytest.raises(MediaError, match="unrecognized format"):
        det.score_bytes(b"this is not an image at all")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(MediaError, match="truncated or corrupt"):
        det.score_bytes(buf.getvalue()[:60])
    with pytest.raises(MediaTooLargeError, match="over the limit"):
        det.score_bytes(_png_header(10_000, 8_000), max_pixels=50_000_000)
    with pytest.raises(MediaError, match="at least 64"):
        det.score_image(np.zeros((32, 200, 3), np.uint8), b"k")
    with pytest.raises(MediaError, match="uint8 RGB"):
        det.score_image(np.zeros((100, 100), np.float32), b"k")


def test_cli_detect_json_is_reproducible_and_errors_are_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    image = FIXTURES / GOLDEN[0][0]
    res = runner.invoke(app, ["detect", str(image), "--json", "--seed", "7", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)["results"][0]
    assert doc["file"] == str(image) and doc["advisory"] == ADVISORY and len(doc["crops"]) == 64
    again = runner.invoke(app, ["detect", str(image), "--json", "--seed", "7", "--device", "cpu"])
    assert json.loads(again.stdout)["results"][0]["score"] == doc["score"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    res = runner.invoke(app, ["detect", str(bad), "--device", "cpu"])
    said = " ".join(res.output.split())  # Rich wraps at 80 columns
    # a plain message after the file's name, as other commands print (before: the
    # exception's class name, "MediaError: truncated or corrupt image: ...")
    assert res.exit_code == 1 and f"{bad}: truncated or corrupt image: " in said, said
    assert "MediaError" not in said and "Traceback" not in said, said
    res = runner.invoke(app, ["detect", str(image), "--model", "npr"])
    assert res.exit_code == 2 and "needs its published checkpoint" in res.output


def test_cli_eval_scores_a_fixed_model_per_family(tmp_path: Path) -> None:
    labels = tmp_path / "LABELS.tsv"
    rows = ["file\tlabel\tgenerator\tsource"]
    rows += [
        f"{FIXTURES / rel}\t{label}\t{'-' if label == 'real' else 'LDM x'}\t{rel}"
        for rel, label, _ in GOLDEN
        if "church" not in rel
    ]
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "report.json"
    args = ["eval", "--model", "default", "--data", str(labels), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["data"]["families"] == {"latent_diffusion": 1, "real": 2}
    harmonised = report["families"]["latent_diffusion"]["harmonised"]
    assert set(harmonised) == {"auc", "ap", "ece", "generated_flagged", "real_flagged"}
    assert 0.0 <= harmonised["auc"] <= 1.0
    res = CliRunner().invoke(app, ["eval", "--data", str(labels), "--families", "nope"])
    assert res.exit_code == 2 and "no generated images of families ['nope']" in res.output


def test_cli_help_teaches() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--help"])
    assert (
        res.exit_code == 0 and "re-encoded as JPEG" in res.output and "--device cuda" in res.output
    )
    res = runner.invoke(app, ["eval", "--help"])
    assert res.exit_code == 0 and "harmonised" in res.output


def test_an_image_wider_than_a_jpeg_can_be_is_not_scored_with_a_reason(det: Detector) -> None:
    """The served model re-encodes each image as JPEG before cropping; libjpeg writes at most
    65500 pixels a side, so a 70000 x 64 PNG (4.5 Mpx, within the pixel limit) gets a
    clear MediaError (a 'not scored' note on the server), not an encoder failure."""
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 70_000, 3), 128, np.uint8)).save(buf, format="PNG")
    with pytest.raises(MediaError, match="65500"):
        det.score_bytes(buf.getvalue())
    with pytest.raises(MediaError, match="65500"):
        det.score_image(np.zeros((65_501, 64, 3), np.uint8), b"k")
    assert det.score_image(np.zeros((64, 65_500, 3), np.uint8), b"k").band


def test_a_call_past_its_deadline_is_dropped_not_run(det: Detector) -> None:
    """A call behind a long batch (here: another caller's 24 photos, seconds of CPU) gives
    up at its deadline with DetectorTimeoutError, and its crops, still queued, are dropped:
    the worker never runs them once it is free. While the batch in hand has run past the
    deadline (a stuck device looks the same), the next call is refused at once, queuing
    nothing. Before, a caller waited for its result without a deadline."""
    import time

    from prometheus_client import REGISTRY

    from provenance.core.errors import DetectorTimeoutError

    def batch_stat(name: str) -> float:
        return REGISTRY.get_sample_value(f"prov_detector_batch_size_{name}") or 0.0

    with Image.open(FIXTURES / GOLDEN[0][0]) as im:
        rgb = np.asarray(im.convert("RGB"))
    crops = det.model.meta.preprocess.crops
    rows_before, batches_before = batch_stat("sum"), batch_stat("count")
    big = threading.Thread(
        target=det.score_images, args=([rgb] * 24, [bytes([i]) for i in range(24)])
    )
    big.start()
    try:
        limit = time.monotonic() + 30
        while batch_stat("count") == batches_before and time.monotonic() < limit:
            time.sleep(0.005)  # until the worker has taken the big batch
        # its own deadline's error (without it, it would wait for the big call and be
        # scored); the next is refused at once, saying why
        with pytest.raises(DetectorTimeoutError, match="did not answer within 0.5 s"):
            det.score_image(rgb, b"late", timeout_s=0.5)
        with pytest.raises(DetectorTimeoutError, match="running one batch for"):
            det.score_image(rgb, b"later", timeout_s=0.5)
    finally:
        big.join()
    assert det.score_image(rgb, b"after", timeout_s=60).crops  # on time again
    # the worker ran the big call's crops and the last call's, never the late one's
    assert batch_stat("sum") - rows_before == 24 * crops + crops


def test_a_failed_inference_tells_callers_no_internals() -> None:
    """torch failing on the worker thread (out of memory, a device error: its words name
    the device, its memory, sometimes files): the DetectorError's message keeps torch's
    words for the server's log; what a caller's report says (``public``) does not.
    Before, the report's note was "not scored: detector inference failed: <torch's
    words>"."""
    from provenance.core.errors import DetectorError

    words = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; /opt/prov/weights.bin)"

    def fail(*_: object) -> None:
        raise RuntimeError(words)

    with Detector.load("default", device="cpu", secret=SECRET) as d:
        d.model.net.register_forward_hook(fail)
        with pytest.raises(DetectorError) as failed:
            d.score_image(_rgb(GOLDEN[0][0]), b"k")
    assert words in str(failed.value)
    assert failed.value.public == "detector inference failed; the server logged why"
