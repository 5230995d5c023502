"""Networks, weight files and the training loop of the detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from detector.config import Calibration, ModelMeta, Preprocess
from detector.features import patch_logits
from detector.metrics import roc_auc
from detector.model import PatchResNet, build_network, npr_residual
from detector.registry import load_model
from detector.train import TrainConfig, fit, train_network
from detector.transforms import Augment
from detector.weights import load_weights, save_weights
from provenance.core.errors import DetectorError


def test_npr_residual_is_pixel_minus_its_cell_corner() -> None:
    x = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).reshape(2, 3, 6, 7)
    r = npr_residual(x)
    assert r.shape == (2, 3, 6, 6)  # odd width cut to even
    corner = x[..., :6, :6][..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.equal(r, x[..., :6, :6] - corner)
    # Nearest-neighbour 2x upsampling leaves no residual at all.
    up = F.interpolate(torch.rand(1, 3, 8, 8), scale_factor=2, mode="nearest")
    assert torch.count_nonzero(npr_residual(up)) == 0


@pytest.mark.parametrize("size", [(64, 64), (96, 80), (32, 40)])
def test_patch_resnet_shapes_and_finite_outputs(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = PatchResNet().eval()
    with torch.no_grad():
        out = net(torch.randn(5, 3, *size))
    assert out.shape == (5,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert net.forward_features(torch.randn(2, 3, *size)).shape == (2, 128)
    assert 280_000 < sum(p.numel() for p in net.parameters()) < 320_000


def _resnet_state(
    stem_kernel: int, layers: tuple[int, ...], head: str, head_in: int
) -> dict[str, torch.Tensor]:
    """A state dict with the key names and shapes of torchvision's ResNet-50 layout
    (bottlenecks of 64/128/256/512 planes, expansion 4, downsample on each stage's first
    block), written out here independently of detector.model."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        sd[f"{name}.weight"] = (
            torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
        )

    def bn(name: str, c: int) -> None:
        sd[f"{name}.weight"] = torch.rand(c, generator=g) + 0.5
        sd[f"{name}.bias"] = torch.randn(c, generator=g) * 0.1
        sd[f"{name}.running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, stem_kernel)
    bn("bn1", 64)
    cin = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=False), start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            conv(f"{p}.conv1", planes, cin, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                conv(f"{p}.downsample.0", planes * 4, cin, 1)
                bn(f"{p}.downsample.1", planes * 4)
            cin = planes * 4
    sd[f"{head}.weight"] = torch.randn(1, head_in, generator=g) * 0.01
    sd[f"{head}.bias"] = torch.zeros(1)
    return sd


def test_cnndetection_checkpoint_layout_loads_by_path(tmp_path: Path) -> None:
    sd = _resnet_state(7, (3, 4, 6, 3), "fc", 2048)
    assert len(sd) == 320  # as torchvision's resnet50().state_dict()
    path = tmp_path / "blur_jpg_prob0.5.pth"
    torch.save({"model": sd, "total_steps": 1}, path)  # CNNDetection's checkpoint shape
    m = load_model("cnndetection", path)
    assert m.meta.arch == "cnndetection_resnet50" and "uncalibrated" in m.meta.version
    assert m.meta.preprocess.patch_size == 224 and not m.meta.calibration.fitted
    assert sum(p.numel() for p in m.net.parameters()) == 23_510_081  # 25,557,032 less fc 1000 -> 1
    assert torch.equal(
        m.net.state_dict()["layer3.5.bn3.running_var"], sd["layer3.5.bn3.running_var"]
    )
    with torch.no_grad():
        out = m.net(torch.randn(2, 3, 96, 96))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_npr_checkpoint_layout_loads_by_path(tmp_path: Path) -> None:
    sd = _resnet_state(3, (3, 4), "fc1", 512)
    sd["fc.weight"] = torch.zeros(1, 2048)  # NPR's trainer attaches an unused fc
    sd["fc.bias"] = torch.zeros(1)
    path = tmp_path / "NPR.pth"
    torch.save(sd, path)
    m = load_model("npr", path)
    assert torch.equal(m.net.state_dict()["layer2.3.conv3.weight"], sd["layer2.3.conv3.weight"])
    with torch.no_grad():
        out = m.net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_wrong_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    sd = _resnet_state(7, (3, 4, 6, 3), "fc", 2048)
    sd["fc.weight"] = torch.zeros(1000, 2048)  # an ImageNet classifier, not a detector
    path = tmp_path / "imagenet.pth"
    torch.save(sd, path)
    with pytest.raises(DetectorError, match=r"shape: fc.weight \(1000, 2048\) != \(1, 2048\)"):
        load_model("cnndetection", path)
    with pytest.raises(DetectorError, match="needs its published checkpoint"):
        load_model("npr")
    with pytest.raises(DetectorError, match="unknown detector model"):
        load_model("resnet9000")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(DetectorError, match="cannot load checkpoint"):
        load_model("npr", junk)


def test_weights_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    net = build_network("patch_resnet", {"residual": "npr", "widths": [8, 16, 32, 64]})
    meta = ModelMeta(
        "default",
        "test-1",
        "patch_resnet",
        {"residual": "npr", "widths": [8, 16, 32, 64]},
        Preprocess(crops=4),
        Calibration(slope=2.0, fitted=True),
        {"note": "test"},
    )
    path = tmp_path / "w.safetensors"
    written = save_weights(path, net, meta)
    state, read = load_weights(path)
    assert read == written and len(read.tensors_sha256) == 64
    m = load_model("default", path)
    assert m.meta.calibration.slope == 2.0
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.net(x), net.eval()(x))
    # Flip one byte of tensor data (the header is the first 8 + n bytes).
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DetectorError, match="digest"):
        load_weights(path)


def _upsampled_noise(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Generator-like patches: noise at half resolution, nearest-upsampled 2x."""
    small = rng.integers(0, 256, (n, size // 2, size // 2, 3), dtype=np.uint8)
    return small.repeat(2, axis=1).repeat(2, axis=2)


def test_training_loop_learns_upsampling_traces() -> None:
    """A smoke run on 256 patches of 32 px: nearest-upsampled noise versus plain noise."""
    rng = np.random.default_rng(0)
    gen = _upsampled_noise(rng, 128, 32)
    real = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
    patches = np.concatenate([gen, real])
    labels = np.r_[np.ones(128), np.zeros(128)]
    config = TrainConfig(epochs=2, batch_size=64, lr=3e-3, widths=(8, 16, 32, 64))
    net = PatchResNet(widths=(8, 16, 32, 64))
    pre = Preprocess()
    train_network(net, patches, labels, config, pre, torch.device("cpu"))
    test_gen = _upsampled_noise(rng, 32, 32)
    test_real = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    logits = patch_logits(net, np.concatenate([test_gen, test_real]), pre, torch.device("cpu"))
    assert np.isfinite(logits).all()
    assert roc_auc(np.r_[np.ones(32), np.zeros(32)], logits) > 0.95


def test_fit_writes_weights_metadata_and_arguments(tmp_path: Path) -> None:
    """The train recipe end to end on 24 synthetic images (a smoke run, not a model)."""
    rng = np.random.default_rng(1)
    for sub, imgs in (
        ("real", rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)),
        ("generated/upsampler", _upsampled_noise(rng, 12, 64)),
    ):
        (tmp_path / sub).mkdir(parents=True)
        for i, img in enumerate(imgs):
            Image.fromarray(img).save(tmp_path / sub / f"{i}.png")
    out = tmp_path / "model.safetensors"
    config = TrainConfig(
        patch=32,
        epochs=3,
        variants=2,
        per_variant=8,
        eval_crops=4,
        batch_size=64,
        widths=(8, 16, 32, 64),
        calibration_fraction=0.35,
        augment=Augment(crop=64, jpeg_quality=(95, 100), blur_prob=0.0, resize_prob=0.0),
    )
    meta, summary = fit([tmp_path], out, config, model_id="smoke", version="0")
    assert summary["train_images"] + summary["calibration_images"] == 24
    _, read = load_weights(out)
    assert read == meta and read.training["data"]["families"] == {"real": 12, "upsampler": 12}
    assert read.calibration.fitted and read.preprocess.crops == 4
    assert read.preprocess.patch_size == 32
    args = json.loads(out.with_suffix(".json").read_text())
    assert (
        args["config"]["widths"] == [8, 16, 32, 64]
        and args["tensors_sha256"] == meta.tensors_sha256
    )


@pytest.mark.parametrize(
    "fraction, split", [(0.0, "calibration split"), (1.0, "training split"), (0.5, "split")]
)
def test_fit_refuses_a_split_without_both_classes_before_training(
    tmp_path: Path, fraction: float, split: str
) -> None:
    """Two images (`scripts/gpu_check.sh` on a tiny fixture folder): before, an empty
    calibration split crashed in image_logits ("ValueError: need at least one array to
    concatenate", a traceback from `prov detector train`), an empty training split in
    np.concatenate; now DetectorError says which split lacks what, before training."""
    rng = np.random.default_rng(2)
    for sub in ("real", "generated/upsampler"):
        (tmp_path / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / sub / "0.png"
        )
    config = TrainConfig(
        patch=32, epochs=1, variants=1, per_variant=2, eval_crops=2, batch_size=8,
        widths=(8, 8, 8, 8), calibration_fraction=fraction,
        augment=Augment(crop=64, jpeg_quality=(95, 100), blur_prob=0.0, resize_prob=0.0),
    )  # fmt: skip
    with pytest.raises(DetectorError, match=f"{split} has .* it needs images of both classes"):
        fit([tmp_path], tmp_path / "m.safetensors", config)
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("name", ["default", "cnndetection"])
def test_a_weights_path_that_is_no_file_is_named_as_such(tmp_path: Path, name: str) -> None:
    """`--weights /dev/zero` said "not found" (and a published-checkpoint model would
    have read the device without end); a missing path is still "not found"."""
    for path in (Path("/dev/zero"), tmp_path):
        with pytest.raises(DetectorError, match="is not a regular file"):
            load_model(name, path)
    with pytest.raises(DetectorError, match="not found"):
        load_model(name, tmp_path / "missing.safetensors")
