"""Runs the benchmark suite and evaluates the performance targets.

For every selected shape and method (:data:`benchmarks.flops.METHODS`, the Dense baseline
first) the suite initializes the network, compiles the forward pass and the train step ahead
of time (compile time recorded apart), and times both with :func:`benchmarks.timing.time_call`
in this one process. Ratios are taken against the Dense network of the same shape timed in the
same run. Then it times the Monte Carlo predictive of the sampling methods (vmapped over keys),
an ensemble of networks vmapped over parameter sets against separate calls, and optionally the
PyTorch implementation.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import memory, models, timing, torch_compare
from benchmarks.flops import METHODS, SHAPES, Shape, flop_ratio, matmul_flops

__all__ = ["Config", "TARGETS", "evaluate_targets", "run_suite"]

#: Methods whose Monte Carlo predictive is timed (the sampling methods).
MC_METHODS = ("bbb", "lr")
#: Sampling-free methods: one pass gives the predictive mean and variance.
ANALYTIC_METHODS = ("clt", "cltdet")

#: Performance targets, reported beside the measurements and never asserted in tests.
#: ``kind`` is ``'ratio'`` (method time / Dense time, must be <= ``limit``) or
#: ``'torch_speedup'`` (PyTorch eager time / JAX time, must be >= ``limit``).
TARGETS = (
    {"platform": "cpu", "shape": "rl", "method": "clt", "mode": "train", "kind": "ratio", "limit": 3.0},
    {"platform": "cpu", "shape": "rl", "method": "bbb", "mode": "train", "kind": "ratio", "limit": 1.5},
    {"platform": "cpu", "shape": "rl", "method": "lr", "mode": "train", "kind": "ratio", "limit": 2.5},
    {"platform": "gpu", "shape": "rl", "method": "clt", "mode": "train", "kind": "ratio", "limit": 1.3},
    {"platform": "gpu", "shape": "wide", "method": "clt", "mode": "train", "kind": "ratio", "limit": 3.2},
    {"platform": "gpu", "shape": "rl", "method": "clt", "mode": "train", "kind": "torch_speedup", "limit": 10.0},
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Suite settings.

    Attributes:
      shapes: names of the shapes to run (keys of :data:`benchmarks.flops.SHAPES`).
      methods: methods to run; ``'dense'`` is always included as the baseline.
      smoke: quick run: one timed repeat, no time budget, no ``torch.compile``.
      budget_s: timing budget per measurement (seconds).
      min_repeats: minimum timed repeats per measurement.
      max_repeats: maximum timed repeats per measurement.
      ensemble_size: networks in the ensemble benchmark.
      ensemble_methods: methods for which the ensemble is timed.
      ensemble_max_forward_s: an ensemble is skipped (and reported as skipped) when one
        network's forward pass takes longer than this: it would only repeat the forward
        timing ``ensemble_size`` times over (on a 2-core CPU at the wide shape, minutes).
      torch: ``'auto'`` (compare when torch is importable) or ``'off'``.
      torch_compile: attempt ``torch.compile`` when comparing with PyTorch.
      seed: PRNG seed for data and parameters.
    """

    shapes: tuple[str, ...] = ("rl", "wide")
    methods: tuple[str, ...] = METHODS
    smoke: bool = False
    budget_s: float = 1.0
    min_repeats: int = 3
    max_repeats: int = 50
    ensemble_size: int = 10
    ensemble_methods: tuple[str, ...] = ("dense", "clt")
    ensemble_max_forward_s: float = 0.25
    torch: str = "auto"
    torch_compile: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {sorted(SHAPES)}, got {self.shapes}")
        bad = [m for m in (*self.methods, *self.ensemble_methods) if m not in METHODS]
        if bad:
            raise ValueError(f"methods must be among {METHODS}, got {bad}")
        if self.torch not in ("auto", "off"):
            raise ValueError(f"torch must be 'auto' or 'off', got {self.torch!r}")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}")

    @classmethod
    def smoke_config(cls, shapes: tuple[str, ...] = ("rl",), **kwargs: Any) -> "Config":
        """Settings of ``--smoke``: every code path once, one repeat, no time budget; the
        ensemble only for the Dense network unless ``ensemble_methods`` is given (compiling
        the Bayesian train steps dominates a smoke run)."""
        kwargs.setdefault("ensemble_methods", ("dense",))
        return cls(
            shapes=shapes, smoke=True, budget_s=0.0, min_repeats=1, max_repeats=1,
            torch_compile=False, **kwargs,
        )

    @property
    def run_methods(self) -> tuple[str, ...]:
        """Methods in table order, the Dense baseline always first."""
        return tuple(m for m in METHODS if m == "dense" or m in self.methods)


def device_info() -> dict[str, Any]:
    """The device JAX uses, the host, and library versions."""
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "versions": {
            "jax": jax.__version__,
            "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "torch": torch_compare.torch_version(),
        },
    }


def _jaxlib_version() -> str:
    import jaxlib

    return str(jaxlib.__version__)


def device_slug(info: dict[str, Any]) -> str:
    """File-name friendly device name, e.g. ``cpu-2core`` or ``gpu-nvidia-h100-80gb-hbm3``."""
    if info["platform"] == "cpu":
        return f"cpu-{info['cpu_count']}core"
    kind = "".join(c if c.isalnum() else "-" for c in str(info["device_kind"]).lower())
    kind = "-".join(part for part in kind.split("-") if part)
    return f"{info['platform']}-{kind}"


class _Progress:
    """Numbered progress lines on stderr."""

    def __init__(self, total: int, stream: Any = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.start = time.perf_counter()

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        width = len(str(self.total))
        print(f"[{self.done:>{width}}/{self.total} {elapsed:6.1f}s] {text}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        print(f"  {text}", file=self.stream, flush=True)


def _time_group(calls: dict[str, Callable[[], Any]], cfg: Config) -> dict[str, timing.Timing]:
    """Times a group of calls interleaved (budget ``cfg.budget_s`` per call in the group)."""
    return timing.time_interleaved(
        calls, budget_s=cfg.budget_s * len(calls), min_repeats=cfg.min_repeats,
        max_repeats=cfg.max_repeats,
    )


def _bench_shape(shape: Shape, cfg: Config, progress: _Progress) -> dict[str, list[dict[str, Any]]]:
    """All JAX measurements of one shape.

    Phase 1 builds and compiles everything of every method (compile time and XLA memory are
    recorded here). Phase 2 times the forward passes of all methods interleaved, then the
    train steps, then the Monte Carlo predictives, then each ensemble (vmapped and separate
    interleaved), so every ratio compares calls that ran under the same machine load.
    """
    key = jax.random.PRNGKey(cfg.seed)
    k_x, k_y, k_net, k_fwd, k_state = jax.random.split(key, 5)
    x = jax.random.normal(k_x, (shape.batch, shape.widths[0]), jnp.float32)
    y = jax.random.normal(k_y, (shape.batch, shape.widths[-1]), jnp.float32)
    tx = optax.adam(1e-3)
    fwd_calls: dict[str, Callable[[], Any]] = {}
    train_calls: dict[str, Callable[[], Any]] = {}
    mc_calls: dict[str, Callable[[], Any]] = {}
    ens_calls: dict[str, dict[str, Callable[[], Any]]] = {}
    compile_s: dict[tuple[str, str], float] = {}
    mem: dict[tuple[str, str], Any] = {}
    holders: dict[str, dict[str, Any]] = {}

    # Phase 1: build and compile.
    for method in cfg.run_methods:
        start = time.perf_counter()
        net = models.build_network(method, shape, k_net)
        variables = net.variables
        fwd, compile_s[(method, "forward")] = timing.compile_jitted(
            jax.jit(net.forward), variables, x, k_fwd)
        mem[(method, "forward")] = memory.compiled_memory(fwd)
        fwd_calls[method] = lambda c=fwd, v=variables: c(v, x, k_fwd)

        step = models.make_train_step(net, tx)
        state = (net.params, tx.init(net.params), k_state)
        train, compile_s[(method, "train")] = timing.compile_jitted(step, state, net.rest, x, y)
        mem[(method, "train")] = memory.compiled_memory(train)
        # The step donates its state: give it copies, so ``variables`` stays valid.
        holders[method] = {"state": jax.tree_util.tree_map(jnp.copy, state)}

        def train_call(c: Any = train, h: dict[str, Any] = holders[method], rest: Any = net.rest) -> Any:
            h["state"], loss = c(h["state"], rest, x, y)
            return loss

        train_calls[method] = train_call
        if method in MC_METHODS:
            keys = jax.random.split(k_fwd, shape.mc_samples)
            mc_fn, compile_s[(method, "mc")] = timing.compile_jitted(
                models.make_mc_forward(net), variables, x, keys)
            mc_calls[method] = lambda c=mc_fn, v=variables, k=keys: c(v, x, k)
        if method in cfg.ensemble_methods:
            size = cfg.ensemble_size
            stacked = jax.jit(jax.vmap(net.init))(jax.random.split(k_net, size))
            fwd_keys = jax.random.split(k_fwd, size)
            vmapped, compile_s[(method, "ensemble")] = timing.compile_jitted(
                models.make_ensemble_forward(net), stacked, x, fwd_keys)
            members = [jax.tree_util.tree_map(lambda a, i=i: a[i], stacked) for i in range(size)]
            ens_calls[method] = {
                "vmapped": lambda c=vmapped, s=stacked, k=fwd_keys: c(s, x, k),
                # The same compiled single-network forward, called once per member.
                "separate": lambda c=fwd, m=members, k=fwd_keys: [c(v, x, kk) for v, kk in zip(m, k)],
            }
        progress.step(f"{shape.name:<5} {method:<7} built and compiled in "
                      f"{time.perf_counter() - start:.2f} s (forward {compile_s[(method, 'forward')]:.2f} s, "
                      f"train step {compile_s[(method, 'train')]:.2f} s)")

    # Phase 2: timings, interleaved across methods.
    records: list[dict[str, Any]] = []
    for mode, calls in (("forward", fwd_calls), ("train", train_calls)):
        timings = _time_group(calls, cfg)
        for method, t in timings.items():
            records.append(_record(shape, method, mode, t, compile_s[(method, mode)], mem[(method, mode)]))
        progress.step(f"{shape.name:<5} {mode:<7} " + ", ".join(
            f"{m} {t.median_s * 1e3:.3f} ms" for m, t in timings.items()))
    for r in records:
        if r["mode"] == "train":
            r["final_loss_finite"] = bool(np.isfinite(float(train_calls[r["method"]]())))
    holders.clear()

    mc: list[dict[str, Any]] = []
    if mc_calls:
        timings = _time_group(mc_calls, cfg)
        for method, t in timings.items():
            mc.append({
                "shape": shape.name, "method": method, "samples": shape.mc_samples,
                "median_s": t.median_s, "samples_per_s": shape.mc_samples / t.median_s,
                "rows_per_s": shape.mc_samples * shape.batch / t.median_s,
                "compile_s": compile_s[(method, "mc")], "timing": t.as_dict(), "analytic": False,
            })
        progress.step(f"{shape.name:<5} MC x{shape.mc_samples} " + ", ".join(
            f"{m} {shape.mc_samples / t.median_s:.1f} samples/s" for m, t in timings.items()))
    fwd_time = {r["method"]: r["median_s"] for r in records if r["mode"] == "forward"}
    for method in cfg.run_methods:
        if method in ANALYTIC_METHODS:
            mc.append({
                "shape": shape.name, "method": method, "samples": None,
                "median_s": fwd_time[method], "samples_per_s": None,
                "rows_per_s": shape.batch / fwd_time[method],
                "compile_s": None, "timing": None, "analytic": True,
            })

    ensemble: list[dict[str, Any]] = []
    for method, calls in ens_calls.items():
        if fwd_time[method] > cfg.ensemble_max_forward_s:
            reason = (f"one forward pass takes {fwd_time[method]:.2f} s > "
                      f"{cfg.ensemble_max_forward_s:g} s (--ensemble-max-forward)")
            ensemble.append({"shape": shape.name, "method": method,
                             "members": cfg.ensemble_size, "skipped": reason})
            progress.step(f"{shape.name:<5} {method:<7} ensemble skipped: {reason}")
            continue
        timings = _time_group(calls, cfg)
        t_vmap, t_sep = timings["vmapped"], timings["separate"]
        ensemble.append({
            "shape": shape.name, "method": method, "members": cfg.ensemble_size,
            "vmapped_s": t_vmap.median_s, "separate_s": t_sep.median_s,
            "speedup": t_sep.median_s / t_vmap.median_s,
            "compile_s": compile_s[(method, "ensemble")],
            "timing_vmapped": t_vmap.as_dict(), "timing_separate": t_sep.as_dict(),
        })
        progress.step(f"{shape.name:<5} {method:<7} ensemble x{cfg.ensemble_size}: vmapped "
                      f"{t_vmap.median_s * 1e3:.3f} ms, separate {t_sep.median_s * 1e3:.3f} ms")
    return {"records": records, "mc": mc, "ensemble": ensemble}


def _record(
    shape: Shape, method: str, mode: str, t: timing.Timing, compile_s: float,
    mem: dict[str, int] | None,
) -> dict[str, Any]:
    flops = matmul_flops(method, shape, mode)
    return {
        "shape": shape.name, "method": method, "mode": mode,
        "median_s": t.median_s, "timing": t.as_dict(), "compile_s": compile_s,
        "memory": mem, "matmul_flops": flops,
        "gflops_per_s": flops / t.median_s / 1e9,
        "flop_ratio": flop_ratio(method, shape, mode),
    }


def _add_ratios(records: list[dict[str, Any]]) -> None:
    """Adds ``ratio_to_dense`` and ``vs_flop_limit`` (= ratio / FLOP ratio) in place."""
    base = {(r["shape"], r["mode"]): r["median_s"] for r in records if r["method"] == "dense"}
    for r in records:
        ratio = r["median_s"] / base[(r["shape"], r["mode"])]
        r["ratio_to_dense"] = ratio
        r["vs_flop_limit"] = ratio / r["flop_ratio"]


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Targets of this platform with the measured value and whether each is met.

    A target whose shape or method was not run, or that needs PyTorch when it is missing, is
    reported with ``measured = None`` and ``met = None``.
    """
    plat = results["device"]["platform"]
    times = {(r["shape"], r["method"], r["mode"]): r for r in results["records"]}
    torch_times = {}
    if results.get("torch", {}).get("status") == "ok":
        torch_times = {
            (r["shape"], r["method"], r["mode"]): r["median_s"]
            for r in results["torch"]["records"]
            if r["impl"] == "eager" and "median_s" in r
        }
    out = []
    for target in TARGETS:
        if target["platform"] != plat:
            continue
        k = (target["shape"], target["method"], target["mode"])
        measured = None
        if target["kind"] == "ratio" and k in times:
            measured = times[k]["ratio_to_dense"]
        elif target["kind"] == "torch_speedup" and k in times and k in torch_times:
            measured = torch_times[k] / times[k]["median_s"]
        if measured is None:
            met = None
        elif target["kind"] == "ratio":
            met = measured <= target["limit"]
        else:
            met = measured >= target["limit"]
        out.append({**target, "measured": measured, "met": met})
    return out


def run_suite(cfg: Config, *, stream: Any = sys.stderr) -> dict[str, Any]:
    """Runs every measurement of ``cfg`` and returns the JSON-serializable results.

    Args:
      cfg: the suite settings.
      stream: where progress lines go.

    Returns:
      A dictionary with ``meta``, ``device``, ``config``, ``shapes``, ``records``, ``mc``,
      ``ensemble``, ``memory``, ``torch`` and ``targets``.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    info = device_info()
    shapes = [SHAPES[name] for name in cfg.shapes]
    n_methods = len(cfg.run_methods)
    per_shape = (n_methods + 2
                 + any(m in MC_METHODS for m in cfg.run_methods)
                 + sum(m in cfg.ensemble_methods for m in cfg.run_methods))
    progress = _Progress(per_shape * len(shapes), stream)
    print(f"device: {info['platform']} ({info['device_kind']}), {info['device_count']} device(s); "
          f"host {info['processor']}, {info['cpu_count']} CPUs", file=stream, flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
          file=stream, flush=True)
    records: list[dict[str, Any]] = []
    mc: list[dict[str, Any]] = []
    ensemble: list[dict[str, Any]] = []
    peaks: list[dict[str, Any]] = []
    for shape in shapes:
        out = _bench_shape(shape, cfg, progress)
        records += out["records"]
        mc += out["mc"]
        ensemble += out["ensemble"]
        peaks.append({"after_shape": shape.name, **memory.process_peak()})
    _add_ratios(records)
    torch_result: dict[str, Any] = {"status": "off"}
    if cfg.torch == "auto":
        torch_result = torch_compare.run_torch(
            shapes, list(cfg.run_methods),
            use_cuda=info["platform"] == "gpu",
            budget_s=cfg.budget_s, min_repeats=cfg.min_repeats, max_repeats=cfg.max_repeats,
            compile_methods=torch_compare.COMPILE_METHODS if cfg.torch_compile else (),
            progress=progress.note,
        )
        if torch_result["status"] != "ok":
            progress.note(f"torch: {torch_result['status']}")
    results: dict[str, Any] = {
        "meta": {
            "suite": "bayeslayers_jax benchmarks",
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
            "argv": sys.argv,
            "dtype": "float32",
        },
        "device": info,
        "config": dataclasses.asdict(cfg),
        "shapes": {s.name: {"batch": s.batch, "widths": list(s.widths), "label": s.label(),
                            "description": s.description, "mc_samples": s.mc_samples}
                   for s in shapes},
        "records": records,
        "mc": mc,
        "ensemble": ensemble,
        "memory": {"process_peaks": peaks},
        "torch": torch_result,
    }
    if torch_result.get("status") == "ok":
        jax_times = {(r["shape"], r["method"], r["mode"]): r["median_s"] for r in records}
        for r in torch_result["records"]:
            k = (r["shape"], r["method"], r["mode"])
            if "median_s" in r and k in jax_times:
                r["torch_over_jax"] = r["median_s"] / jax_times[k]
    results["targets"] = evaluate_targets(results)
    results["meta"]["wall_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return results
