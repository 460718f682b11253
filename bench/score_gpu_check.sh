#!/usr/bin/env bash
# Issue 15's GPU check, for a machine with a CUDA GPU and the project installed (PY = its python).
# Prints: the device; that auto device selection picks CUDA with fp16; that the GPU input path
# (batched torchvision decode_jpeg on CUDA + resize/crop/normalise on the device) matches the CPU
# preprocessing; then bare and end-to-end img/s and their ratios for ViT-B-32 and ViT-L-14 in fp16,
# face detector on and off (bench/score_throughput.py). About 5-8 minutes on an H100 with 16 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 PROFILE_AUDIT_NO_PROGRESS=1 PYTHONPATH="$PWD"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| cores:', __import__('os').cpu_count())"
"$PY" - <<'PY'
import numpy as np

from detectors.backbone import BackboneSpec, load_backbone
from detectors.gpu_batch import DeviceTransform, pil_reference
from pipeline.testing.demo import draw_face, encode

b = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0"))
print("auto device:", b.device, b.precision)
assert b.device.startswith("cuda") and b.precision == "fp16"
rng = np.random.default_rng(0)
datas = []
for side in (400, 160, 1024):
    datas.append(encode(draw_face(rng, side), "JPEG", quality=85))
gpu = DeviceTransform.from_transform(b.preprocess, "resize_center_crop", "cuda")(datas).cpu()
diff = (gpu - pil_reference(datas, b.preprocess)).abs()
print(f"GPU input path vs CPU preprocessing: max abs {diff.max():.4f}, mean abs {diff.mean():.5f}")
assert diff.mean() < 0.01
PY
"$PY" bench/score_throughput.py --device cuda --models ViT-B-32,ViT-L-14 --images "${IMAGES:-2048}" \
    --batch-size "${BATCH:-256}" --workers "${WORKERS:-12}"
# clip-vit-b16 (the shipped detector's INT8 ONNX): onnxruntime takes the CUDA execution provider only where
# onnxruntime-gpu is installed; the line says which provider ran (the CPU wheel runs it on the CPU)
"$PY" -c "import onnxruntime as o; print('onnxruntime providers:', o.get_available_providers())"
"$PY" bench/score_throughput.py --models clip-vit-b16 --images "${IMAGES:-2048}" \
    --batch-size "${BATCH:-256}" --workers "${WORKERS:-12}"
