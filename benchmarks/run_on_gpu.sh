#!/usr/bin/env bash
# Full benchmark suite on a GPU machine, run from a repository checkout without installing.
#
#   bash benchmarks/run_on_gpu.sh [extra python -m benchmarks options]
#
# Needs jax with CUDA, flax, optax and chex importable (torch too for the PyTorch
# comparison; it is skipped with a note when missing). Writes <device>_<date>.json/.md and
# the console log into $OUT when that is set, else into benchmarks/results/. Takes a few
# minutes on an H100: most of it is XLA and torch.compile compilation.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
# JAX preallocates GPU memory; leave half of it to PyTorch, which shares the device.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"

out_dir="${OUT:-benchmarks/results}"
mkdir -p "${out_dir}"

python - <<'PY'
import jax
devices = jax.devices()
if devices[0].platform != "gpu":
    raise SystemExit(f"expected a GPU, JAX sees {devices}")
print("JAX devices:", devices)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

python -m benchmarks --out "${out_dir}" "$@" 2>&1 | tee "${out_dir}/gpu_run.log"
