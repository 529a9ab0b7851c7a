#!/usr/bin/env bash
# The device check for a session that is lent a GPU (one H200, 15 minutes of device time in all):
# one prepared run, about 6 minutes on the GPU, so that there is time to run it again.
#
#   1. MA-FSAR vs CLIP-FSAR, one training step on CLIP ViT-B/32 (random weights), fp32 and bf16:
#      time and peak CUDA memory (paper Table 15: 1.11 vs 1.34 s/it, 11.9 vs 13.2 GB).
#   2. The engine's CUDA path end to end: `fsar train` with AMP on the GPU (tiny CLIP, a
#      tiny synthetic set), then `fsar eval` of its checkpoint, and the CPU evaluation of the
#      same checkpoint for comparison (the GPU and CPU accuracies must agree).
#
# On the device machine (the `run` tool; its python3 holds a CUDA torch):
#   bash benchmarks/gpu_check.sh            # writes under $OUT (or /tmp/fsar-gpu-check)
# Here, the same script on the CPU with test-sized models (checks the script, not a figure):
#   FSAR_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh
# Record the printed tables in benchmarks/README.md with the commit and the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
DEVICE=${FSAR_CHECK_DEVICE:-cuda}
OUT=${OUT:-/tmp/fsar-gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "fsar $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname), $(date -u +%FT%TZ), device $DEVICE"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    STEP_ARGS=(--steps 10 --warmup 3)
    AMP=bf16
else
    STEP_ARGS=(--tiny --steps 1 --warmup 1)
    AMP=off  # CPU autocast is exercised by part 1 (bf16); the engine part stays in float32 here
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo; echo "== 1. training step, ma-fsar vs clip-fsar, fp32 and bf16"
timeout 360 "$PY" benchmarks/gpu_step.py --device "$DEVICE" --amp off bf16 "${STEP_ARGS[@]}" \
    --json "$OUT/gpu_step.json"

echo; echo "== 2. fsar train / eval on $DEVICE (tiny CLIP, tiny synthetic set: the code path, not accuracy)"
TINY='encoder_options={image_size: 32, patch_size: 16, width: 32, vision_layers: 1, heads: 2, text_width: 32, text_layers: 1, text_heads: 2, projection_dim: 16, vocab_size: 64}'
DATA="$OUT/synth"
"$PY" -m fsar data synth "$DATA" --classes 10 --videos-per-class 4 --frames 8 --size 32 --overwrite --no-progress
COMMON=(--data "$DATA" --method ma-fsar --backbone clip-vit-b32 --weights random -O "$TINY" --frames 8
        --image-size 32 --way 3 --shot 1 --queries 1 --no-progress)
timeout 180 "$PY" -m fsar train "${COMMON[@]}" --device "$DEVICE" --amp "$AMP" --episodes 12 --tasks-per-step 2 \
    --val-every 0 --out "$OUT/run"
for where in "$DEVICE" cpu; do
    timeout 120 "$PY" -m fsar eval --data "$DATA" --checkpoint "$OUT/run" --device "$where" --way 3 --shot 1 --queries 1 \
        --episodes 50 --no-progress --json "$OUT/eval_$where.json"
done
"$PY" - "$OUT" "$DEVICE" <<'EOF'
import json, sys
out, device = sys.argv[1], sys.argv[2]
a, b = (json.load(open(f"{out}/eval_{d}.json")) for d in (device, "cpu"))
acc = lambda r: r.get("accuracy", r.get("mean"))
print(f"eval of one checkpoint on {device}: {acc(a)}; on cpu: {acc(b)}")
EOF
echo; echo "done: $OUT"
