"""The fused Pallas CLT + ReLU kernel against the XLA path: ``python -m benchmarks.pallas_clt``.

Times the forward pass of one CLT hidden layer (float32, Bayesian weights, a stochastic
input: the mean matmul, both variance matmuls and the ReLU moment matching) as
:func:`bayeslayers_jax.clt_dense_relu_fused` (one compiled Triton kernel) and as the XLA
path a :class:`~bayeslayers_jax.linen.CLTLinear` layer runs
(:func:`~bayeslayers_jax.clt_linear_moments`, then :func:`~bayeslayers_jax.relu_moments` of
``safe_sqrt(var)``), both jitted and compiled ahead of time, timed interleaved
(:func:`benchmarks.timing.time_interleaved`), for a few shapes and tile sizes. It also
reports the largest difference between the two outputs.

GPU only: off a GPU it prints why it skipped and exits 0 (interpret mode, the only way to run
the kernel on a CPU, would time the Pallas interpreter, not the kernel). ``--smoke`` runs the
code path on tiny shapes in interpret mode; its numbers are not measurements.
``benchmarks/run_on_gpu.sh`` runs it before the suite and writes ``pallas_clt.json`` into
``$OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import compile_jitted, time_interleaved
from bayeslayers_jax import clt_dense_relu_fused, clt_linear_moments, relu_moments, safe_sqrt

__all__ = ["SHAPES", "SMOKE_SHAPES", "CONFIGS", "SKIP_REASON", "run", "markdown", "main"]

#: ``(batch, in_features, features)``: the RL layer, a wide layer, a large one.
SHAPES: tuple[tuple[int, int, int], ...] = ((256, 256, 256), (1024, 1024, 1024), (4096, 2048, 2048))
#: Tiny shapes for ``--smoke`` (interpret mode).
SMOKE_SHAPES: tuple[tuple[int, int, int], ...] = ((5, 7, 3),)
#: Tile sizes ``(block_b, block_n, block_k)`` tried for each shape.
CONFIGS: tuple[tuple[int, int, int], ...] = ((64, 64, 32), (128, 128, 32), (64, 128, 64))
SKIP_REASON = (
    "skipped: the fused kernel is timed on a GPU only (default backend is {backend}); Pallas "
    "interpret mode would time the interpreter, not the kernel"
)


def _xla(x_mean, x_var, w_mu, w_var, b_mu, b_var):
    mean, var = clt_linear_moments(x_mean, x_var, w_mu, w_var, b_mu, b_var)
    return relu_moments(mean, safe_sqrt(var))


def _inputs(batch: int, k: int, n: int, seed: int = 0) -> tuple[jax.Array, ...]:
    ks = jax.random.split(jax.random.key(seed), 6)
    f32 = jnp.float32
    return (
        jax.random.normal(ks[0], (batch, k), f32),
        jax.random.uniform(ks[1], (batch, k), f32),
        jax.random.normal(ks[2], (k, n), f32) / float(np.sqrt(k)),
        0.01 * jax.random.uniform(ks[3], (k, n), f32),
        jax.random.normal(ks[4], (n,), f32),
        0.01 * jax.random.uniform(ks[5], (n,), f32),
    )


def run(
    shapes=SHAPES, *, budget_s: float = 0.5, interpret: bool = False, configs=CONFIGS, progress=None
) -> dict[str, Any]:
    """Times fused against XLA for every shape and tile configuration.

    Args:
      shapes: ``(batch, in_features, features)`` triples.
      budget_s: timing budget per (shape, configuration).
      interpret: run the kernel in interpret mode (``--smoke`` only: not a measurement).
      configs: ``(block_b, block_n, block_k)`` triples.
      progress: called with each row as soon as it is measured (the command line prints it,
        so a run killed by its time limit still shows what it measured).

    Returns:
      ``{'device': ..., 'interpret': ..., 'rows': [...]}``, one row per shape and
      configuration: the median seconds per call of each, their ratio, compile times and the
      largest absolute differences of the outputs.
    """
    xla = jax.jit(_xla)
    rows = []
    for batch, k, n in shapes:
        args = _inputs(batch, k, n)
        xla_c, xla_compile = compile_jitted(xla, *args)
        ref = jax.block_until_ready(xla_c(*args))
        for bb, bn, bk in configs:
            fused = jax.jit(lambda *a, bb=bb, bn=bn, bk=bk: clt_dense_relu_fused(
                *a, interpret=interpret, block_b=bb, block_n=bn, block_k=bk))
            fused_c, fused_compile = compile_jitted(fused, *args)
            out = jax.block_until_ready(fused_c(*args))
            times = time_interleaved(
                {"fused": lambda: fused_c(*args), "xla": lambda: xla_c(*args)}, budget_s=budget_s
            )
            rows.append({
                "shape": [batch, k, n], "blocks": [bb, bn, bk],
                "fused_s": times["fused"].median_s, "xla_s": times["xla"].median_s,
                "fused_over_xla": times["fused"].median_s / times["xla"].median_s,
                "compile_fused_s": fused_compile, "compile_xla_s": xla_compile,
                "max_abs_diff_mean": float(jnp.max(jnp.abs(out[0] - ref[0]))),
                "max_abs_diff_var": float(jnp.max(jnp.abs(out[1] - ref[1]))),
            })
            if progress is not None:
                progress(rows[-1])
    return {"device": str(jax.devices()[0]), "interpret": interpret, "rows": rows}


def _header(device: str, interpret: bool) -> str:
    return "\n".join([
        f"## Fused Pallas CLT + ReLU vs XLA (forward, float32, {device}"
        f"{', interpret mode: not a measurement' if interpret else ''})",
        "",
        "| batch x in x out | blocks (b, n, k) | fused ms | XLA ms | fused / XLA | max diff mean, var |",
        "|---|---|---|---|---|---|",
    ])


def _line(r: dict[str, Any]) -> str:
    return (
        f"| {'x'.join(map(str, r['shape']))} | {tuple(r['blocks'])} | {1e3 * r['fused_s']:.3f} | "
        f"{1e3 * r['xla_s']:.3f} | {r['fused_over_xla']:.2f} | "
        f"{r['max_abs_diff_mean']:.1e}, {r['max_abs_diff_var']:.1e} |"
    )


def markdown(results: dict[str, Any]) -> str:
    """The rows of :func:`run` as a Markdown table."""
    return "\n".join([_header(results["device"], results["interpret"]), *map(_line, results["rows"])])


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (0 also when skipped off GPU)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pallas_clt", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes in interpret mode (not a measurement)")
    parser.add_argument("--budget-s", type=float, default=0.5, help="timing budget per shape and tiling")
    parser.add_argument("--out", default=None, help="directory for pallas_clt.json (default: none)")
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    if not args.smoke and backend != "gpu":
        reason = SKIP_REASON.format(backend=backend)
        print(reason)
        results = {"device": str(jax.devices()[0]), "skipped": reason, "rows": []}
    else:
        print(_header(str(jax.devices()[0]), args.smoke), flush=True)
        show = lambda row: print(_line(row), flush=True)  # noqa: E731
        if args.smoke:
            results = run(SMOKE_SHAPES, budget_s=0.0, interpret=True, configs=((2, 2, 4),), progress=show)
        else:
            results = run(budget_s=args.budget_s, progress=show)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "pallas_clt.json"), "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
