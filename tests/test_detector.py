"""Unit tests of the detector's pure parts: metrics, calibration, crops, transforms,
data reading, batching."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from detector.batching import BatchQueue
from detector.calibrate import apply, calibrate, fit_platt, sigmoid
from detector.crops import plan_crops
from detector.data import family_of, in_split, load_samples, read_label_file
from detector.metrics import average_precision, expected_calibration_error, roc_auc
from detector.transforms import CONDITIONS, Augment, center_crop, grid_positions, jpeg_roundtrip
from provenance.core.errors import DetectorError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


# Metrics: values worked by hand (and equal to scikit-learn's on the same input).
Y = np.array([0, 0, 1, 1, 0, 1])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])


def test_roc_auc_counts_ties_as_half() -> None:
    # positives .35 (1 win), .8 (3 wins), .4 (1 win + 2 ties) -> 6 / 9
    assert roc_auc(Y, S) == pytest.approx(6 / 9)
    assert roc_auc(Y, -S) == pytest.approx(3 / 9)
    assert np.isnan(roc_auc(np.zeros(3), np.arange(3)))


def test_average_precision_one_threshold_per_distinct_score() -> None:
    # thresholds .8 (P=1, R=1/3), .4 (P=.5, R=2/3), .35 (P=.6, R=1)
    assert average_precision(Y, S) == pytest.approx((1 + 0.5 + 0.6) / 3)


def test_ece_equal_width_bins() -> None:
    expected = (abs(1 / 3 - 0.4) * 3 + 0.65 + 0.2 + 0.1) / 6
    assert expected_calibration_error(Y, S) == pytest.approx(expected)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_platt_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=20000) * 2
    y = (rng.random(20000) < sigmoid(1.5 * x - 0.5)).astype(int)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(1.5, abs=0.06)
    assert b == pytest.approx(-0.5, abs=0.06)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("scale", [1.0, 3.0, 10.0, 50.0, 1e-8, 1e8, 1e200, 1e300, 1e-300])
def test_platt_converges_on_logits_of_any_scale_and_offset(scale: float) -> None:
    # Pure Newton from slope 1 diverged on logits a few units wide and off-centre (a
    # PatchResNet trained on 168 images: slope 5.5e10 and thresholds 0 / 1 shipped, or a
    # working network refused as "ranks backwards"); the fit must not depend on the
    # logits' units: fitting c * x + d gives slope a / c, intercept b - a * d / c.
    # Logits of 1e200 and 1e300 overflowed the Hessian (RuntimeWarning) and were refused
    # as "ranks backwards"; those of 1e-300 fitted a slope 1e-13 of the true one.
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(30), np.ones(24)].astype(int)
    x = rng.normal(0, 1, 54) + 1.1 * y
    a, b = fit_platt(x, y)
    a2, b2 = fit_platt(scale * x - 2 * scale, y)
    assert 0 < a < 10
    assert a2 == pytest.approx(a / scale, rel=1e-6)
    assert b2 == pytest.approx(b + 2 * a, rel=1e-6, abs=1e-9)
    cal = calibrate(scale * x - 2 * scale, y)
    assert 0 < cal.threshold_low <= cal.threshold_high < 1


def test_weighted_logistic_fit_counts_a_row_of_weight_two_twice() -> None:
    from detector.calibrate import fit_logistic

    rng = np.random.default_rng(3)
    z = rng.normal(0, 4, 40) + 3
    y = (rng.random(40) < sigmoid(0.5 * z - 1)).astype(float)
    design = np.stack([z, np.ones_like(z)], 1)
    twice = np.r_[design, design[:10]], np.r_[y, y[:10]]
    weights = np.r_[np.full(10, 2.0), np.ones(30)]
    assert fit_logistic(design, y, weights) == pytest.approx(fit_logistic(*twice), rel=1e-6)


def test_temperature_fit_without_intercept_scales_with_the_logits() -> None:
    from detector.calibrate import fit_logistic

    rng = np.random.default_rng(6)
    z = rng.normal(0, 1, 500)
    y = (rng.random(500) < sigmoid(1.7 * z)).astype(float)
    (a,) = fit_logistic(z[:, None], y, intercept=None)
    (a8,) = fit_logistic(8 * z[:, None], y, intercept=None)  # plain Newton: 1.9e15
    assert 1.0 < a < 3.0
    assert a8 == pytest.approx(a / 8, rel=1e-6)


def test_calibration_refuses_logits_and_labels_of_different_lengths() -> None:
    with pytest.raises(DetectorError, match="5 held-out logits but 4 labels"):
        calibrate(np.arange(5.0), np.array([0, 1, 0, 1]))


@pytest.mark.filterwarnings("error")
def test_calibration_fits_logits_up_to_the_largest_float() -> None:
    # before: np.ptp overflowed (RuntimeWarning), then the Hessian; refused as
    # "ranks backwards"
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    x = np.linspace(-1.0, 1.0, 100) + 0.5 * (np.arange(100) % 2)
    top = np.finfo(np.float64).max
    a, b = fit_platt(x, y)
    a2, b2 = fit_platt(x * (top / 2), y)
    assert a2 * (top / 2) == pytest.approx(a, rel=1e-6)
    assert b2 == pytest.approx(b, rel=1e-6, abs=1e-9)
    with pytest.raises(DetectorError, match=r"slope -.*e-308 <= 0: the model ranks"):
        calibrate(-x * (top / 2), y)


@pytest.mark.filterwarnings("error")
def test_calibration_refuses_logits_too_close_for_a_float_slope() -> None:
    # Logits 1e-320 apart (subnormal) need a slope of about 1e320, beyond float64: before,
    # a slope 0.000 was refused as "ranks backwards"
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    x = (np.linspace(-1.0, 1.0, 100) + y) * 1e-320
    with pytest.raises(DetectorError, match="column 0 .* beyond float64"):
        calibrate(x, y)


def test_calibration_is_monotonic_and_thresholds_ordered() -> None:
    rng = np.random.default_rng(1)
    logits = np.r_[rng.normal(-1, 1, 300), rng.normal(1.5, 1, 300)]
    labels = np.r_[np.zeros(300), np.ones(300)]
    cal = calibrate(logits, labels)
    grid = np.linspace(-8, 8, 200)
    probs = apply(cal, grid)
    assert np.all(np.diff(probs) > 0)
    assert 0 <= cal.threshold_low <= cal.threshold_high <= 1
    real_probs = apply(cal, logits[:300])
    assert np.mean(real_probs >= cal.threshold_high) <= 0.06
    assert cal.fitted and cal.held_out_images == 600


def test_calibration_refuses_one_class_and_inverted_models() -> None:
    with pytest.raises(DetectorError, match="both classes"):
        calibrate(np.zeros(5), np.zeros(5))
    with pytest.raises(DetectorError, match="backwards"):
        calibrate(np.r_[np.full(50, 2.0), np.full(50, -2.0)], np.r_[np.zeros(50), np.ones(50)])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "2 of 100 held-out logits are not finite"),  # before: "ranks backwards"
        (np.inf, "2 of 100 held-out logits are not finite"),
        (-np.inf, "2 of 100 held-out logits are not finite"),
    ],
)
def test_calibration_refuses_logits_that_are_not_finite(bad: float, message: str) -> None:
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    x = rng.normal(0, 1, 100) + y
    x[[3, 70]] = bad
    with pytest.raises(DetectorError, match=message):
        calibrate(x, y)


def test_noise_calibration_counts_the_noise_levels_that_are_not_finite() -> None:
    from detector.calibrate import fit_platt_noise

    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    noise = rng.normal(0, 1, 100)
    noise[7] = np.nan  # before: "100 of 100" (the NaN spoilt the reference quantile)
    with pytest.raises(DetectorError, match="1 of 100 held-out noise levels are not finite"):
        fit_platt_noise(rng.normal(0, 1, 100) + y, noise, y)


@pytest.mark.parametrize("value", [0.0, 5.0])
def test_calibration_refuses_logits_that_are_all_equal(value: float) -> None:
    # before: value 0 was refused as "ranks backwards"; value 5 shipped slope 0.006 and
    # every image scored 0.5 against a threshold_high of 0.49999999999999994
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    with pytest.raises(DetectorError, match="all equal"):
        calibrate(np.full(100, value), y)


def test_logistic_fit_refuses_weights_and_targets_it_cannot_fit() -> None:
    from detector.calibrate import fit_logistic

    design = np.stack([np.arange(6.0), np.ones(6)], 1)
    t = np.array([0, 0, 1, 0, 1, 1.0])
    for weights, message in [
        (np.zeros(6), "weights"),  # before: [0, nan]
        (-np.ones(6), "weights"),  # before: [0, 0]
        (np.r_[np.nan, np.ones(5)], "weights"),
    ]:
        with pytest.raises(DetectorError, match=message):
            fit_logistic(design, t, weights)
    with pytest.raises(DetectorError, match="targets"):
        fit_logistic(design, np.r_[np.nan, t[1:]])  # before: [0, nan]
    with pytest.raises(DetectorError, match="targets"):
        fit_logistic(design, t * 2)
    with pytest.raises(DetectorError, match="rows"):
        fit_logistic(design[:0], t[:0])  # before: [0, nan]
    with pytest.raises(DetectorError, match="rows"):
        fit_logistic(design, t[:5])  # before: ValueError from numpy


def test_crops_are_reproducible_keyed_and_inside_the_image() -> None:
    a = plan_crops(b"secret-1", b"request", 300, 200, 64, 16)
    assert a == plan_crops(b"secret-1", b"request", 300, 200, 64, 16)
    assert a != plan_crops(b"secret-2", b"request", 300, 200, 64, 16)
    assert a != plan_crops(b"secret-1", b"request2", 300, 200, 64, 16)
    assert all(0 <= c.x <= 300 - 64 and 0 <= c.y <= 200 - 64 and c.size == 64 for c in a)
    assert len({(c.x, c.y) for c in a}) > 10


def test_crops_shrink_for_small_images() -> None:
    plan = plan_crops(b"k", b"r", 100, 70, 224, 64)
    assert {c.size for c in plan} == {70}
    assert all(c.x + c.size <= 100 and c.y + c.size <= 70 for c in plan)
    assert len(plan) == 64 and {c.size for c in plan_crops(b"k", b"r", 100, 70, 64, 8)} == {64}


def test_grid_positions_cover_edges_and_respect_count() -> None:
    pos = grid_positions(256, 256, 64, 16)
    assert len(pos) == 16
    assert (0, 0) in pos and (192, 192) in pos
    assert len(grid_positions(64, 64, 64, 16)) == 1
    assert len(grid_positions(300, 500, 64, 10)) == 10


def test_jpeg_roundtrip_and_conditions_shapes() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    out = jpeg_roundtrip(img, 75)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 5 < np.abs(out.astype(int) - img).mean() < 100  # lossy, but the same picture
    assert center_crop(img, 256).shape == (256, 256, 3)
    shapes = {name: fn(img).shape for name, fn in CONDITIONS.items()}
    assert shapes == {
        "as_is": (300, 400, 3),
        "harmonised": (256, 256, 3),
        "harmonised_jpeg75": (256, 256, 3),
        "harmonised_resize50": (128, 128, 3),
    }


def test_augment_always_reencodes_and_is_seeded() -> None:
    rng_img = np.random.default_rng(3).integers(0, 256, (200, 180, 3), dtype=np.uint8)
    aug = Augment(crop=128)
    a = aug(rng_img, np.random.default_rng(7))
    b = aug(rng_img, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert a.shape[0] == a.shape[1] and 64 <= a.shape[0] <= 128
    # No pixel block equals the original exactly: the JPEG re-encode always happened.
    assert not any(
        np.array_equal(a[:16, :16], rng_img[y : y + 16, x : x + 16])
        for y in range(0, 72)
        for x in range(0, 52)
    )


def test_families_of_the_shared_sets() -> None:
    assert family_of("StyleGAN2 config-f (LSUN Church 256, official weights converted)") == (
        "stylegan",
        "gan",
    )
    assert family_of("pix2pixHD (COCO-Stuff, baseline in SPADE figure)") == ("spade", "gan")
    assert family_of("BicycleGAN (PyTorch-GAN reimpl., edges->shoes)") == (
        "image_translation",
        "gan",
    )
    assert family_of("DiT-XL/2 (class-conditional ImageNet latent diffusion)") == (
        "dit_pixart",
        "diffusion",
    )
    assert family_of("LDM text-to-image (LAION 1.45B latent diffusion)") == (
        "latent_diffusion",
        "diffusion",
    )
    assert family_of("score_sde NCSN++ (FFHQ 256)") == ("pixel_diffusion", "diffusion")
    assert family_of("something new") == ("unknown", "other")


def test_label_files_read_with_counts_and_groups() -> None:
    first = read_label_file(FIXTURES / "detector" / "LABELS.tsv")
    assert len(first) == 340 and sum(s.label for s in first) == 202
    both = load_samples([FIXTURES / "detector", FIXTURES / "detector_more"])
    assert len(both) == 1035 and sum(s.label for s in both) == 583
    assert all(s.path.is_file() for s in both)
    fams = {s.family for s in both if s.label}
    assert {"stylegan", "biggan", "latent_diffusion", "pixel_diffusion"} <= fams
    assert "unknown" in fams  # CNNDetection's fake.png, never a held-out family
    # Tiles of one figure share a group.
    church = [s for s in first if "stylegan2-church" in str(s.group)]
    assert len(church) == 16 and len({s.group for s in church}) == 1


def test_label_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "LABELS.tsv"
    bad.write_text("file\tlabel\nx.png\tmaybe\n")
    with pytest.raises(DetectorError, match="real\\|generated"):
        read_label_file(bad)
    with pytest.raises(DetectorError, match="not a label file"):
        load_samples([tmp_path / "missing"])


def test_split_is_deterministic_and_near_its_fraction() -> None:
    groups = [f"g{i}" for i in range(4000)]
    chosen = [in_split(g, 0.3, "salt") for g in groups]
    assert chosen == [in_split(g, 0.3, "salt") for g in groups]
    assert 0.27 < np.mean(chosen) < 0.33
    assert chosen != [in_split(g, 0.3, "other") for g in groups]


def test_batch_queue_merges_concurrent_requests() -> None:
    calls: list[int] = []

    def run(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        sums: np.ndarray = rows.reshape(len(rows), -1).sum(axis=1).astype(np.float32)
        return sums

    q = BatchQueue(run, max_batch=64, max_wait_s=0.2)
    inputs = [np.full((4, 2, 2), i, np.uint8) for i in range(16)]
    results: dict[int, np.ndarray] = {}

    def worker(i: int) -> None:
        results[i] = q.submit(inputs[i]).result(timeout=10)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.close()
    for i in range(16):
        assert results[i].tolist() == [4.0 * i] * 4
    assert sum(calls) == 64 and len(calls) < 16  # fewer forward passes than requests
    with pytest.raises(DetectorError, match="closed"):
        q.submit(inputs[0])


def test_batch_queue_reports_failures_to_callers_and_keeps_running() -> None:
    def run(rows: np.ndarray) -> np.ndarray:
        if rows.shape[1] == 3:
            raise RuntimeError("boom")
        return np.zeros(len(rows), np.float32)

    q = BatchQueue(run, max_batch=8, max_wait_s=0.0)
    with pytest.raises(RuntimeError, match="boom"):
        q.submit(np.zeros((2, 3))).result(timeout=10)
    assert q.submit(np.zeros((2, 4))).result(timeout=10).tolist() == [0.0, 0.0]
    q.close()


def test_crops_are_stratified_over_the_whole_image() -> None:
    for secret in (b"a", b"b", b"c"):
        plan = plan_crops(secret, b"r", 640, 480, 64, 16)
        quadrants = {(c.x + 32 >= 320, c.y + 32 >= 240) for c in plan}
        assert quadrants == {(False, False), (False, True), (True, False), (True, True)}
        assert len({(c.x, c.y) for c in plan}) == 16


def test_band_policy_protects_every_origin_and_reports_unseen_sources() -> None:
    from detector.calibrate import real_threshold, threshold_at_most
    from detector.data import Sample
    from detector.policy import Scored, fit_band_policy

    s = np.arange(100, dtype=float)
    t = threshold_at_most(s, 0.05)
    assert np.mean(s >= t) == 0.05 and np.mean(s >= np.nextafter(t, -np.inf)) > 0.05
    # An origin that scores high on its own (film scans) raises the threshold until at
    # most 5% of it is flagged, though the pooled rate alone would allow more.
    rng = np.random.default_rng(0)
    cams, scans = rng.normal(0, 1, 400), rng.normal(2, 1, 40)
    pooled = threshold_at_most(np.r_[cams, scans], 0.05)
    strict = real_threshold(np.r_[cams, scans], ["camera"] * 400 + ["scan"] * 40, 0.05, 10)
    assert strict > pooled and np.mean(scans >= strict) <= 0.05
    assert np.mean(scans >= pooled) > 0.05

    def sample(i: int, label: int, repo: str, origin: str) -> Sample:
        fam = "gen" if label else "real"
        return Sample(Path(f"{i}.png"), label, fam, fam, str(i), "-", repo, origin)

    scored = [
        Scored(sample(i, 0, f"real/{i % 8}", ("camera", "scan")[i % 2]), rng.normal(-1, 1, 4), 0.0)
        for i in range(400)
    ] + [Scored(sample(i, 1, f"gen/{i % 5}", "gen"), rng.normal(1, 1, 4), 0.0) for i in range(400)]
    cal, report = fit_band_policy(scored)
    loso = report["leave_one_source_out"]
    assert cal.fitted and 0 < cal.threshold_low <= cal.threshold_high < 1
    assert cal.noise_coef == 0.0
    assert report["sources"] == 13 and set(loso["real_by_origin"]) == {"camera", "scan"}
    assert loso["real_flagged"] <= 0.08 and loso["generated_flagged"] > 0.3
    assert 0.8 < report["auc"] < 1.0


def test_noise_estimate_tracks_added_gaussian_noise() -> None:
    from detector.noise import NOISE_FLOOR, crop_noise, log_noise

    rng = np.random.default_rng(3)
    # A smooth ramp (the mask cancels it) plus Gaussian noise of known sigma.
    ramp = np.linspace(40, 200, 64)[None, :, None] + np.linspace(0, 20, 64)[:, None, None]
    for sigma in (2.0, 5.0, 10.0):
        noisy = ramp[None] + rng.normal(0, sigma, (8, 64, 64, 1))
        crops = np.clip(np.repeat(noisy, 3, axis=3), 0, 255).round().astype(np.uint8)
        assert np.median(crop_noise(crops)) == pytest.approx(sigma, rel=0.1)
        assert log_noise(crops) == pytest.approx(np.log(sigma), abs=0.1)
    flat = np.full((4, 64, 64, 3), 90, np.uint8)
    assert crop_noise(flat).tolist() == [0.0] * 4 and log_noise(flat) == np.log(NOISE_FLOOR)
    with pytest.raises(DetectorError, match="uint8"):
        crop_noise(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(DetectorError, match="no crops"):
        log_noise(np.zeros((0, 64, 64, 3), np.uint8))


def test_band_noise_term_asks_clean_images_for_more_evidence() -> None:
    from detector.calibrate import fit_platt_noise, likely_generated, noise_offset

    rng = np.random.default_rng(4)
    x, n = rng.normal(size=20000) * 2, rng.normal(0.5, 0.6, 20000)
    # Only images cleaner than the median noise level (0.5) are moved.
    y = (rng.random(20000) < sigmoid(1.2 * x - 0.3 + 0.8 * np.minimum(n - 0.5, 0))).astype(int)
    a, b, c, ref = fit_platt_noise(x, n, y)
    assert ref == pytest.approx(np.median(n))
    assert (a, b, c) == pytest.approx((1.2, -0.3, 0.8), abs=0.1)
    assert 0 < fit_platt_noise(x, n, y, one_sided=False)[2] < c
    # The band's term: fixed shape (ratio, ref), Platt and thresholds as without it.
    plain = calibrate(x, y)
    cal = calibrate(x, y, noise_term=(c / a, ref))
    assert (cal.slope, cal.threshold_high) == (plain.slope, plain.threshold_high)
    assert cal.noise_coef == pytest.approx(plain.slope * c / a) and cal.noise_ref == ref
    assert np.array_equal(apply(cal, x), apply(plain, x))
    flags, plain_flags = likely_generated(cal, x, n), likely_generated(plain, x)
    assert np.array_equal(plain_flags, apply(plain, x) >= plain.threshold_high)
    assert not (flags & ~plain_flags).any()  # never flags what the plain rule would not
    lost = plain_flags & ~flags
    assert lost.any() and (n[lost] < ref).all()  # only clean images need more evidence
    assert noise_offset(cal, np.array([ref + 1, ref, ref - 1])) == pytest.approx(
        [0, 0, -cal.noise_coef]
    )
    with pytest.raises(DetectorError, match="noise level"):
        likely_generated(cal, x)
