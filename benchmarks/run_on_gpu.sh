#!/usr/bin/env bash
# Benchmark suite on a GPU machine, run from a repository checkout without installing:
#
#   bash benchmarks/run_on_gpu.sh [extra python -m benchmarks options]
#
# Runs `python -m benchmarks --preset gpu-quick`, sized for about 10 minutes of GPU-machine
# time with compilation included: the RL and wide shapes (every method, train and forward),
# ObjectRL's layers eagerly for BBB, LR and CLT and under torch.compile for CLT, ensembles of
# 10 Dense and CLT networks against one, and the SAC update with 2 and 10 critics 256 wide.
# It prints everything the GPU goals of issue 9 need: the "## Targets" table (our CLT train
# step / ObjectRL eager <= 1/12 and / ObjectRL + torch.compile <= 1/4; the train step of 10
# vmapped CLT networks <= 2.5x one network's), the PyTorch table and the ensemble table.
#
# First, `python -m benchmarks.pallas_clt` times the fused Pallas CLT + ReLU kernel against
# the XLA path (forward, float32; `pallas_clt.json` and `pallas_clt.log`), killed after
# BENCH_PALLAS_TIMEOUT_S seconds (default 60; 0 skips it); its failure does not stop the suite.
#
# Bounds: the suite skips (and reports as skipped) any unit of work that would start after
# BENCH_SOFT_MINUTES (default 7); the suite is killed after BENCH_TIMEOUT_S seconds
# (default 570 minus the Pallas step's bound, so both fit 10 minutes), so the console log
# always comes back. Extra options override the preset
# (e.g. `--shapes rl` or `--max-minutes 5`).
#
# Needs jax with CUDA, flax, optax and chex importable; torch (CUDA build) and objectrl for
# the PyTorch comparison (skipped with a note when missing; objectrl 0.2 declares
# python >= 3.12, `pip install --no-deps --ignore-requires-python objectrl` works on 3.11).
# Writes <device>_<date>.json/.md and the console log gpu_run.log into $OUT when that is set,
# else into benchmarks/results/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
# JAX preallocates GPU memory; leave half of it to PyTorch, which shares the device.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"

out_dir="${OUT:-benchmarks/results}"
mkdir -p "${out_dir}"
soft_minutes="${BENCH_SOFT_MINUTES:-7}"
pallas_timeout_s="${BENCH_PALLAS_TIMEOUT_S:-60}"
timeout_s="${BENCH_TIMEOUT_S:-$((570 - pallas_timeout_s))}"

python - <<'PY'
import jax
devices = jax.devices()
if devices[0].platform != "gpu":
    raise SystemExit(f"expected a GPU, JAX sees {devices}")
print("JAX devices:", devices)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

if [ "${pallas_timeout_s}" -gt 0 ]; then
    pallas_status=0
    timeout --kill-after=10 "${pallas_timeout_s}" python -m benchmarks.pallas_clt --out "${out_dir}" \
        2>&1 | tee "${out_dir}/pallas_clt.log" || pallas_status=$?
    if [ "${pallas_status}" -ne 0 ]; then
        echo "run_on_gpu.sh: benchmarks.pallas_clt exited with ${pallas_status} (see ${out_dir}/pallas_clt.log); running the suite" >&2
    fi
fi

status=0
timeout --kill-after=20 "${timeout_s}" \
    python -m benchmarks --preset gpu-quick --max-minutes "${soft_minutes}" \
    --out "${out_dir}" "$@" 2>&1 | tee "${out_dir}/gpu_run.log" || status=$?
if [ "${status}" -eq 124 ] || [ "${status}" -eq 137 ]; then
    echo "run_on_gpu.sh: killed after ${timeout_s} s; the partial log is ${out_dir}/gpu_run.log" >&2
fi
exit "${status}"
