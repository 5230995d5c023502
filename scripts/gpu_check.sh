#!/bin/bash
# The detector's checks on a CUDA machine, in one run (docs/detector.md, "GPU"):
#   1. bench/detector_gpu.py: CPU and GPU scores of the same fixture images agree
#      (bf16 tolerance), bare forward patches/s by batch size, score_image end to end;
#   2. `prov detector train --device cuda` on a fixture set (falls back to a smaller
#      network when the calibration refuses the first, as it may on a small set);
#   3. the GPU-trained weights scored on the GPU and on the CPU, side by side.
# Usage: scripts/gpu_check.sh [FIXTURES]   (FIXTURES holds detector/, default ../shared/fixtures
# beside the repository); it runs from the repository root, wherever it is called from.
# Environment: PY (python, default python3; a relative path is taken from the repository
# root), DEV (default cuda; cpu for a dry run),
# OUT (folder for the logs and JSON, default /tmp/gpu-check), EPOCHS (default 10),
# BENCH_ARGS (more options for step 1's bench, after the defaults: "--batches 64" for a quick run).
# Exit status: 3 when the detector cannot be imported, 4 when neither training run of
# step 2 succeeds, 5 when step 3 fails; otherwise that of step 1 (0 pass, 1 scores
# disagree, 77 no CUDA). Step 1's JSON is written straight to OUT (PROV_BENCH_RESULTS).
set -u
FIX=$(realpath -- "${1:-$(dirname -- "$0")/../../shared/fixtures}") || exit 2
OUT=$(realpath -m -- "${OUT:-/tmp/gpu-check}") && mkdir -p "$OUT" || exit 2
cd "$(dirname -- "$0")/.." || exit 2  # the repository root, wherever it is called from
PY=${PY:-python3}; DEV=${DEV:-cuda}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
$PY -c "import detector.infer, detector.data" || exit 3

echo "== 1. bench/detector_gpu.py"
S=$SECONDS
PROV_BENCH_RESULTS=$OUT $PY bench/detector_gpu.py --fixtures "$FIX" --images 64 --seconds 2 --device "$DEV" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/detector_gpu.log"
status=${PIPESTATUS[0]}
echo "detector_gpu: exit $status in $((SECONDS - S)) s"

echo "== 2. training on $DEV"
train() {  # $1: name; the rest: network options
    local name=$1; shift
    S=$SECONDS
    $PY -m detector.cli train --data "$FIX/detector" --device "$DEV" --out "$OUT/gpu-check.safetensors" \
        --model-id gpu-check --no-progress "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
    local rc=$?
    echo "train ($name): exit $rc in $((SECONDS - S)) s"; tail -5 "$OUT/$name.err"
    return $rc
}
train big --epochs "${EPOCHS:-10}" --variants 4 --per-variant 8 --width 32 --patch 128 --batch-size 512 ||
    train small --epochs 8 --variants 2 --per-variant 4 --width 8 ||
    { echo "no training run succeeded (step 1's status was $status)"; exit 4; }

echo "== 3. the $DEV-trained weights on $DEV and on the CPU"
mapfile -t IMGS < <(find "$FIX/detector/real" -type f -name '*.jpg' | sort | head -3; find "$FIX/detector/generated" -type f -name '*.png' | sort | head -3)
for d in "$DEV" cpu; do
    $PY -m detector.cli detect --weights "$OUT/gpu-check.safetensors" --device "$d" --seed 1 \
        --json "${IMGS[@]}" > "$OUT/detect-$d.json" || { echo "detect on $d failed"; exit 5; }
done
$PY - "$OUT" "$DEV" <<'PY' || exit 5
import json, sys
out, dev = sys.argv[1], sys.argv[2]
a, b = (json.load(open(f"{out}/detect-{d}.json"))["results"] for d in (dev, "cpu"))
for x, y in zip(a, b, strict=True):
    print(f"{x['file'][-44:]:44} {dev} {x['score']:.4f} {x['band']:<26} cpu {y['score']:.4f} {y['band']}")
PY
exit "$status"
