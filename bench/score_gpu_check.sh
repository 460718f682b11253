#!/usr/bin/env bash
# Issue 4's one GPU check, for a machine with a CUDA GPU and the project installed (PY = its python).
# Prints: the device; scoring throughput on CUDA (fp16) for ViT-B-32 and the tiny config as a ratio
# to bare encode_image on the same preprocessed tensors, with rerun/new-head forward passes (must be
# 0); and that auto device selection picks CUDA with fp16. About 2-4 minutes on an H100 with 16 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 PROFILE_AUDIT_NO_PROGRESS=1
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| cores:', __import__('os').cpu_count())"
"$PY" - <<'PY'
from detectors.backbone import BackboneSpec, load_backbone
b = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0"))
print("auto device:", b.device, b.precision)
assert b.device.startswith("cuda") and b.precision == "fp16"
PY
"$PY" bench/score_throughput.py --device cuda --models ViT-B-32,pa-tiny-vit --images "${IMAGES:-2048}" \
    --batch-size "${BATCH:-256}" --workers "${WORKERS:-12}"
