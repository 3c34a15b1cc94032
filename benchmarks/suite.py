"""Runs the benchmark suite and evaluates the performance targets.

For every selected shape and method (:data:`benchmarks.flops.METHODS`, the Dense baseline
first) the suite initializes the network, compiles the forward pass and the train step ahead
of time (compile time recorded apart), builds the PyTorch train steps of ObjectRL's own layers
when torch and ObjectRL import (:mod:`benchmarks.torch_compare`; ``torch.compile`` compile
time recorded apart), and times everything in this one process: the forward passes of all
methods interleaved, then the train steps of all methods *and* the PyTorch steps interleaved,
so every ratio (to Dense, and ours / ObjectRL) compares calls made under the same machine load.
The user-style train steps of :mod:`benchmarks.natural` (the package's layers in a user's own
module, ``propagate_moments`` and ``bayesianize`` of a plain MLP, and their Dense twin) are
timed in that same interleaved group.
Then the Monte Carlo predictive of the sampling methods (vmapped over keys), ensembles vmapped
over members against the same members called one by one (:mod:`benchmarks.ensembles`), and
the SAC-style update with ensembles of critics (:mod:`benchmarks.rl_update`).

Order: the first shape (the RL shape by default) with its ensembles, then the SAC update,
then the other shapes, so that under a soft time limit (``max_minutes``) the most used
measurements come first; work that would start after the limit is skipped and listed in
``meta['skipped']``.
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

from benchmarks import ensembles, memory, models, natural, timing, torch_compare
from benchmarks import rl_update as sac
from benchmarks.flops import METHODS, SHAPES, Shape, flop_ratio, matmul_flops

__all__ = ["Config", "TARGETS", "evaluate_targets", "run_suite"]

#: Methods whose Monte Carlo predictive is timed (the sampling methods).
MC_METHODS = ("bbb", "lr")
#: Sampling-free methods: one pass gives the predictive mean and variance.
ANALYTIC_METHODS = ("clt", "cltdet")


def _objectrl_targets() -> tuple[dict[str, Any], ...]:
    return tuple(
        {"platform": "cpu", "kind": "vs_objectrl", "shape": shape, "method": method,
         "impl": impl, "limit": 1.0, "source": "issue 9 (1)"}
        for shape in ("rl", "mid", "wide") for method in ("bbb", "lr", "clt")
        for impl in ("eager", "compile")
    )


#: Performance targets (issues 8 and 9), reported beside the measurements and never asserted
#: in tests. Kinds and what ``measured`` is:
#:
#: * ``ratio``: train-step time / Dense train-step time of the same shape, ``<= limit``;
#: * ``vs_objectrl``: our train-step time / ObjectRL's (``impl`` eager or compile), ``<= limit``;
#: * ``sac_ratio``: SAC update with ``members`` critics of type ``method``, ``width`` wide, /
#:   the same update with Dense critics, ``<= limit``;
#: * ``ensemble_speedup``: ``members`` separate calls / one vmapped call (``mode`` forward or
#:   train), ``>= limit``;
#: * ``ensemble_vs_one``: the vmapped train step of ``members`` networks / one network's train
#:   step, ``<= limit``;
#: * ``natural_ratio``: the user-style train step of ``row`` (:mod:`benchmarks.natural`) / its
#:   Dense twin written the same way, ``<= limit``;
#: * ``natural_vs_suite``: the train step of ``row`` / the suite's own train step of ``method``
#:   (``BayesianMLP`` through ``elbo_loss``) at the same shape, ``<= limit``.
TARGETS: tuple[dict[str, Any], ...] = (
    {"platform": "cpu", "kind": "ratio", "shape": "rl", "method": "clt", "limit": 3.4, "source": "issue 9 (2)"},
    {"platform": "cpu", "kind": "ratio", "shape": "rl", "method": "lr", "limit": 2.6, "source": "issue 9 (2)"},
    {"platform": "cpu", "kind": "ratio", "shape": "rl", "method": "bbb", "limit": 1.6, "source": "issue 9 (2)"},
    *_objectrl_targets(),
    *({"platform": "cpu", "kind": "sac_ratio", "method": method, "members": 2, "width": width,
       "limit": limit, "source": "issues 8, 9 (3)"}
      for method, limit in (("clt", 3.0), ("lr", 2.5)) for width in (128, 256)),
    *({"platform": "cpu", "kind": "natural_ratio", "shape": "rl", "method": method, "row": f"natural/{method}",
       "limit": limit, "source": "issue 22 (1)"}
      for method, limit in (("bbb", 1.6), ("lr", 2.6), ("clt", 3.4))),
    *({"platform": "cpu", "kind": "natural_vs_suite", "shape": shape, "method": method,
       "row": f"natural/{method}", "limit": 1.05, "source": "issue 22 (1)"}
      for shape in ("rl", "mid", "wide") for method in natural.NATURAL_METHODS),
    *({"platform": "cpu", "kind": "natural_vs_suite", "shape": shape, "method": method, "row": row,
       "limit": 1.10, "source": "issue 22 (3)"}
      for shape in ("rl", "mid", "wide") for row, method in (("propagate/clt", "clt"), ("bayesianize/lr", "lr"))),
    *({"platform": "cpu", "kind": "ensemble_speedup", "shape": "rl", "method": method,
       "mode": mode, "members": 10, "limit": 1.5, "source": "issue 8"}
      for method in ("dense", "lr", "clt") for mode in ("forward", "train")),
    {"platform": "gpu", "kind": "ratio", "shape": "rl", "method": "clt", "limit": 1.3, "source": "earlier release"},
    {"platform": "gpu", "kind": "ratio", "shape": "wide", "method": "clt", "limit": 3.2, "source": "earlier release"},
    {"platform": "gpu", "kind": "vs_objectrl", "shape": "rl", "method": "clt", "impl": "eager",
     "limit": 1 / 12, "source": "issue 9 (GPU)"},
    {"platform": "gpu", "kind": "vs_objectrl", "shape": "rl", "method": "clt", "impl": "compile",
     "limit": 1 / 4, "source": "issue 9 (GPU)"},
    {"platform": "gpu", "kind": "ensemble_vs_one", "shape": "rl", "method": "clt", "members": 10,
     "limit": 2.5, "source": "issue 9 (GPU)"},
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
      ensemble_size: members of the ensemble scenario.
      ensemble_methods: methods whose ensemble is timed.
      ensemble_shapes: shapes at which ensembles are timed.
      torch: ``'auto'`` (compare when torch and ObjectRL import) or ``'off'``.
      torch_compile: also time ObjectRL under ``torch.compile``.
      torch_compile_methods: methods timed under ``torch.compile``.
      rl_update: run the SAC-update scenario.
      rl_members: ensemble sizes (numbers of critics) of the SAC scenario.
      rl_widths: hidden widths of the SAC scenario's critics.
      rl_critics: critic types of the SAC scenario (``'dense'`` is the baseline).
      natural: time the user-style rows of :mod:`benchmarks.natural` (the package's layers in
        the user's own module, ``propagate_moments`` and ``bayesianize`` of a plain MLP) with
        the train steps, at the MLP shapes.
      max_minutes: soft wall-time limit: a unit of work (a shape, the PyTorch builds of a
        shape, an ensemble, one SAC configuration) that would start after it is skipped and
        reported as skipped. ``None``: no limit.
      seed: PRNG seed for data and parameters.
    """

    shapes: tuple[str, ...] = ("rl", "mid", "wide")
    methods: tuple[str, ...] = METHODS
    smoke: bool = False
    budget_s: float = 1.0
    min_repeats: int = 3
    max_repeats: int = 50
    ensemble_size: int = 10
    ensemble_methods: tuple[str, ...] = ("dense", "lr", "clt")
    ensemble_shapes: tuple[str, ...] = ("rl",)
    torch: str = "auto"
    torch_compile: bool = True
    torch_compile_methods: tuple[str, ...] = torch_compare.REFERENCE_METHODS
    rl_update: bool = True
    rl_members: tuple[int, ...] = (2, 10)
    rl_widths: tuple[int, ...] = (128, 256)
    rl_critics: tuple[str, ...] = sac.CRITICS
    natural: bool = True
    max_minutes: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in (*self.shapes, *self.ensemble_shapes) if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {sorted(SHAPES)}, got {self.shapes}")
        bad = [m for m in (*self.methods, *self.ensemble_methods) if m not in METHODS]
        if bad:
            raise ValueError(f"methods must be among {METHODS}, got {bad}")
        bad = [m for m in self.torch_compile_methods if m not in torch_compare.TORCH_METHODS]
        if bad:
            raise ValueError(f"torch_compile_methods must be among {torch_compare.TORCH_METHODS}, got {bad}")
        if self.torch not in ("auto", "off"):
            raise ValueError(f"torch must be 'auto' or 'off', got {self.torch!r}")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}")
        bad = [c for c in self.rl_critics if c not in sac.CRITICS]
        if bad:
            raise ValueError(f"rl_critics must be among {sac.CRITICS}, got {bad}")
        if any(m < 1 for m in self.rl_members) or any(w < 1 for w in self.rl_widths):
            raise ValueError(f"rl_members and rl_widths must be positive, got {self.rl_members}, "
                             f"{self.rl_widths}")

    @classmethod
    def smoke_config(cls, shapes: tuple[str, ...] = ("rl",), **kwargs: Any) -> "Config":
        """Settings of ``--smoke``: every code path once (one repeat, no time budget, no
        ``torch.compile``): the ensembles of Dense and CLT networks and the SAC update with 2
        critics 128 wide, unless given."""
        kwargs.setdefault("ensemble_methods", ("dense", "clt"))
        kwargs.setdefault("rl_members", (2,))
        kwargs.setdefault("rl_widths", (128,))
        kwargs.setdefault("ensemble_shapes", tuple(s for s in shapes if s == "rl") or shapes[:1])
        return cls(
            shapes=shapes, smoke=True, budget_s=0.0, min_repeats=1, max_repeats=1,
            torch_compile=False, **kwargs,
        )

    @property
    def run_methods(self) -> tuple[str, ...]:
        """Methods in table order, the Dense baseline always first."""
        return tuple(m for m in METHODS if m == "dense" or m in self.methods)

    @property
    def run_rl_critics(self) -> tuple[str, ...]:
        """SAC critic types in table order, the Dense baseline always first."""
        return tuple(c for c in sac.CRITICS if c == "dense" or c in self.rl_critics)


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
            "objectrl": torch_compare.objectrl_version() or "not installed",
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
    """Numbered progress lines on stderr, and the soft wall-time limit."""

    def __init__(self, total: int, stream: Any = sys.stderr, max_minutes: float | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.start = time.perf_counter()
        self.max_s = None if max_minutes is None else 60.0 * max_minutes

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        width = len(str(self.total))
        print(f"[{self.done:>{width}}/{self.total} {elapsed:6.1f}s] {text}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        print(f"  {text}", file=self.stream, flush=True)

    def out_of_time(self) -> str | None:
        """The skip reason once the soft limit has passed, else ``None``."""
        if self.max_s is not None and time.perf_counter() - self.start > self.max_s:
            return f"skipped: past the {self.max_s / 60:g} min time limit (--max-minutes)"
        return None


def _time_group(calls: dict[str, Callable[[], Any]], cfg: Config,
                warm: dict[str, float] | None = None) -> dict[str, timing.Timing]:
    """Times a group of calls interleaved (budget ``cfg.budget_s`` per call in the group)."""
    return timing.time_interleaved(
        calls, budget_s=cfg.budget_s * len(calls), min_repeats=cfg.min_repeats,
        max_repeats=cfg.max_repeats, warm=warm,
    )


def _torch_steps(shape: Shape, cfg: Config, torch_info: dict[str, Any], progress: _Progress,
                 built: tuple[str, ...]
                 ) -> tuple[dict[tuple[str, str], torch_compare.TorchStep], list[dict[str, Any]]]:
    """Builds (and for ``torch.compile`` compiles) the PyTorch train steps of one shape, for
    the methods in ``built`` (those our side built).

    Returns the steps by ``(method, impl)`` and records of the failures or skips.
    """
    steps: dict[tuple[str, str], torch_compare.TorchStep] = {}
    failed: list[dict[str, Any]] = []
    if torch_info["status"] != "ok":
        return steps, failed
    start = time.perf_counter()
    for method in torch_compare.TORCH_METHODS:
        if method not in built:
            continue
        impls = ["eager"]
        if cfg.torch_compile and method in cfg.torch_compile_methods:
            impls.append("compile")
        for impl in impls:
            base = {"shape": shape.name, "method": method, "impl": impl}
            reason = progress.out_of_time() if impl == "compile" else None
            if reason:
                failed.append({**base, "error": reason})
                continue
            try:
                step = torch_compare.build_train_step(method, shape, impl=impl,
                                                      device=torch_info["device"], seed=cfg.seed)
            except Exception as err:  # noqa: BLE001 - report, do not abort the suite
                message = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
                failed.append({**base, "error": message})
                progress.note(f"torch {shape.name:<5} {method:<5} {impl:<7} failed: {message}")
                continue
            steps[(method, impl)] = step
            progress.note(f"torch {shape.name:<5} {method:<5} {impl:<7} first call "
                          f"{step.first_call_s:.2f} s")
    progress.step(f"{shape.name:<5} PyTorch (ObjectRL layers) built in "
                  f"{time.perf_counter() - start:.1f} s: {len(steps)} steps")
    return steps, failed


def _bench_shape(shape: Shape, cfg: Config, progress: _Progress, torch_info: dict[str, Any]
                 ) -> dict[str, list[dict[str, Any]]]:
    """All measurements of one shape.

    Phase 1 builds and compiles everything of every method (compile time and XLA memory are
    recorded here), then the PyTorch steps. Phase 2 times the forward passes of all methods
    interleaved, then the train steps of all methods and all PyTorch steps interleaved, then
    the Monte Carlo predictives, then each ensemble (vmapped and separate interleaved), so
    every ratio compares calls that ran under the same machine load.
    """
    key = jax.random.PRNGKey(cfg.seed)
    k_x, k_y, k_net, k_fwd, k_state = jax.random.split(key, 5)
    x = jax.random.normal(k_x, shape.input_shape, jnp.float32)
    y = jax.random.normal(k_y, (shape.batch, shape.widths[-1]), jnp.float32)
    tx = optax.adam(1e-3)
    fwd_calls: dict[str, Callable[[], Any]] = {}
    train_calls: dict[str, Callable[[], Any]] = {}
    mc_calls: dict[str, Callable[[], Any]] = {}
    compile_s: dict[tuple[str, str], float] = {}
    mem: dict[tuple[str, str], Any] = {}
    holders: dict[str, dict[str, Any]] = {}
    nets: dict[str, models.Network] = {}

    skipped: list[str] = []
    # Phase 1: build and compile.
    for method in cfg.run_methods:
        reason = progress.out_of_time() if method != "dense" else None
        if reason:
            skipped.append(f"{shape.name} {method}: {reason}")
            progress.note(f"{shape.name:<5} {method:<7} {reason}")
            continue
        start = time.perf_counter()
        net = nets[method] = models.build_network(method, shape, k_net)
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
        progress.step(f"{shape.name:<5} {method:<7} built and compiled in "
                      f"{time.perf_counter() - start:.2f} s (forward {compile_s[(method, 'forward')]:.2f} s, "
                      f"train step {compile_s[(method, 'train')]:.2f} s)")
    natural_calls, natural_compile = _natural_steps(shape, cfg, tx, k_net, x, y, tuple(nets), progress)
    torch_steps, torch_records = ({}, [])
    if torch_info["status"] == "ok" and not shape.spatial:  # ObjectRL has no Bayesian convolutions
        torch_steps, torch_records = _torch_steps(shape, cfg, torch_info, progress, tuple(nets))
    torch_names = {f"torch/{m}/{impl}": (m, impl) for (m, impl) in torch_steps}

    # Phase 2: timings, interleaved across methods (and PyTorch, for the train steps).
    records: list[dict[str, Any]] = []
    fwd_t = _time_group(fwd_calls, cfg)
    for method, t in fwd_t.items():
        records.append(_record(shape, method, "forward", t, compile_s[(method, "forward")],
                               mem[(method, "forward")]))
    progress.step(f"{shape.name:<5} forward " + ", ".join(
        f"{m} {t.median_s * 1e3:.3f} ms" for m, t in fwd_t.items()))
    group = dict(train_calls)
    group.update(natural_calls)
    group.update({name: torch_steps[mi].call for name, mi in torch_names.items()})
    # The PyTorch steps ran once when built: that call is their warm-up.
    train_t = _time_group(group, cfg, warm={
        name: torch_steps[mi].first_call_s for name, mi in torch_names.items()})
    for method in train_calls:
        t = train_t[method]
        r = _record(shape, method, "train", t, compile_s[(method, "train")], mem[(method, "train")])
        r["final_loss_finite"] = bool(np.isfinite(float(train_calls[method]())))
        records.append(r)
    jax_train = {m: train_t[m].median_s for m in train_calls}
    for name, (method, impl) in torch_names.items():
        t, step = train_t[name], torch_steps[(method, impl)]
        torch_records.append({
            "shape": shape.name, "method": method, "impl": impl, "median_s": t.median_s,
            "timing": t.as_dict(), "first_call_s": step.first_call_s,
            "final_loss_finite": bool(np.isfinite(step.last_loss())),
            "ours_over_torch": jax_train[method] / t.median_s if method in jax_train else None,
        })
    natural_records = _natural_records(shape, natural_calls, natural_compile, train_t, jax_train)
    progress.step(f"{shape.name:<5} train   " + ", ".join(
        f"{m} {t.median_s * 1e3:.3f} ms" for m, t in train_t.items()))
    holders.clear()
    natural_calls.clear()
    torch_steps.clear()

    mc: list[dict[str, Any]] = []
    reason = progress.out_of_time()
    if mc_calls and reason:
        skipped.append(f"{shape.name} Monte Carlo: {reason}")
        mc_calls = {}
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
    for method in nets:
        if method in ANALYTIC_METHODS:
            mc.append({
                "shape": shape.name, "method": method, "samples": None,
                "median_s": fwd_time[method], "samples_per_s": None,
                "rows_per_s": shape.batch / fwd_time[method],
                "compile_s": None, "timing": None, "analytic": True,
            })

    ensemble: list[dict[str, Any]] = []
    if shape.name in cfg.ensemble_shapes:
        for method in cfg.ensemble_methods:
            if method not in nets:
                continue
            reason = progress.out_of_time()
            if reason:
                ensemble.append({"shape": shape.name, "method": method,
                                 "members": cfg.ensemble_size, "skipped": reason})
                progress.step(f"{shape.name:<5} {method:<7} ensemble {reason}")
                continue
            e = ensembles.bench_ensemble(nets[method], shape, cfg.ensemble_size, (x, y), tx,
                                         (k_net, k_fwd, k_state), lambda calls: _time_group(calls, cfg))
            ensemble.append(e)
            progress.step(f"{shape.name:<5} {method:<7} ensemble x{cfg.ensemble_size}: forward "
                          f"vmapped {e['forward']['vmapped_s'] * 1e3:.3f} ms / separate "
                          f"{e['forward']['separate_s'] * 1e3:.3f} ms; train vmapped "
                          f"{e['train']['vmapped_s'] * 1e3:.3f} ms / separate "
                          f"{e['train']['separate_s'] * 1e3:.3f} ms / one "
                          f"{e['train']['one_s'] * 1e3:.3f} ms")
    return {"records": records, "mc": mc, "ensemble": ensemble, "torch": torch_records,
            "skipped": skipped, "natural": natural_records}


def natural_rows(shape: Shape, cfg: Config, built: tuple[str, ...]) -> tuple[str, ...]:
    """The user-style rows (:mod:`benchmarks.natural`) timed at ``shape``: the Dense twin and
    the rows whose suite method was built; none at a convolutional shape or with
    ``cfg.natural`` off."""
    if not cfg.natural or shape.spatial:
        return ()
    return ("natural/dense", *(row for row, (method, _) in natural.ROW_BASELINES.items()
                               if method in built))


def _natural_steps(shape: Shape, cfg: Config, tx: optax.GradientTransformation, key: jax.Array,
                   x: jax.Array, y: jax.Array, built: tuple[str, ...], progress: _Progress
                   ) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """Builds and compiles the user-style train steps of one shape (plain ``jax.jit``, no
    donation, as a user writes it; compiled ahead of time here only to keep compilation out
    of the timings). Returns the zero-argument calls and the compile times by row."""
    rows = natural_rows(shape, cfg, built)
    calls: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}
    if not rows:
        return calls, compile_s
    start = time.perf_counter()
    for row in rows:
        ns = natural.build_natural_step(row, shape, key, tx)
        compiled, compile_s[row] = timing.compile_jitted(ns.step, *ns.state, x, y)
        holder = {"state": ns.state}

        def call(c: Any = compiled, h: dict[str, Any] = holder) -> Any:
            params, opt_state, k, loss = c(*h["state"], x, y)
            h["state"] = (params, opt_state, k)
            return loss

        calls[row] = call
    progress.step(f"{shape.name:<5} user-style rows built and compiled in "
                  f"{time.perf_counter() - start:.2f} s: {', '.join(rows)}")
    return calls, compile_s


def _natural_records(shape: Shape, calls: dict[str, Callable[[], Any]], compile_s: dict[str, float],
                     train_t: dict[str, timing.Timing], suite_train: dict[str, float]
                     ) -> list[dict[str, Any]]:
    """Records of the user-style rows, timed in the suite's train-step group: ratios to their
    Dense twin and to the suite's own train step of the same method (same run, interleaved)."""
    out = []
    twin = train_t["natural/dense"].median_s if "natural/dense" in train_t else None
    for row in calls:
        t = train_t[row]
        method = "dense" if row == "natural/dense" else natural.ROW_BASELINES[row][0]
        suite_s = suite_train.get(method)
        out.append({
            "shape": shape.name, "row": row, "method": method, "median_s": t.median_s,
            "timing": t.as_dict(), "compile_s": compile_s[row],
            "ratio_to_twin": t.median_s / twin if twin else None,
            "ratio_to_suite": t.median_s / suite_s if suite_s else None,
            "suite_ratio_to_dense": (suite_s / suite_train["dense"]
                                     if suite_s and "dense" in suite_train else None),
            "final_loss_finite": bool(np.isfinite(float(calls[row]()))),
        })
    return out


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


def _measure_target(target: dict[str, Any], results: dict[str, Any]) -> float | None:
    """The measured value of one target, or ``None`` when it was not measured."""
    kind = target["kind"]
    if kind == "ratio":
        for r in results["records"]:
            if (r["shape"], r["method"], r["mode"]) == (target["shape"], target["method"], "train"):
                return r["ratio_to_dense"]
    elif kind == "vs_objectrl":
        for r in results["torch"].get("records", []):
            if ((r["shape"], r["method"], r["impl"]) == (target["shape"], target["method"], target["impl"])
                    and r.get("ours_over_torch") is not None):
                return r["ours_over_torch"]
    elif kind == "sac_ratio":
        for r in results["rl_update"]:
            if ((r["critic"], r["members"], r["width"]) == (target["method"], target["members"], target["width"])
                    and "ratio_to_dense" in r):
                return r["ratio_to_dense"]
    elif kind in ("natural_ratio", "natural_vs_suite"):
        field = "ratio_to_twin" if kind == "natural_ratio" else "ratio_to_suite"
        for r in results.get("natural", []):
            if (r["shape"], r["row"]) == (target["shape"], target["row"]) and r.get(field) is not None:
                return r[field]
    elif kind in ("ensemble_speedup", "ensemble_vs_one"):
        for e in results["ensemble"]:
            if ((e["shape"], e["method"], e["members"]) != (target["shape"], target["method"], target["members"])
                    or "skipped" in e):
                continue
            if kind == "ensemble_vs_one":
                return e["train"]["vmapped_s"] / e["train"]["one_s"]
            return e[target["mode"]]["speedup"]
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    return None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Targets of this platform with the measured value and whether each is met.

    A target whose measurement was not run (shape, method, PyTorch or scenario missing) is
    reported with ``measured = None`` and ``met = None``.
    """
    plat = results["device"]["platform"]
    out = []
    for target in TARGETS:
        if target["platform"] != plat:
            continue
        measured = _measure_target(target, results)
        if measured is None:
            met = None
        elif target["kind"] == "ensemble_speedup":
            met = measured >= target["limit"]
        else:
            met = measured <= target["limit"]
        out.append({**target, "measured": measured, "met": met})
    return out


def _torch_info(cfg: Config, platform_name: str) -> dict[str, Any]:
    if cfg.torch == "off":
        return {"status": "off"}
    status = torch_compare.availability()
    if status != "ok":
        return {"status": status}
    import torch

    use_cuda = platform_name == "gpu" and torch.cuda.is_available()
    threads = torch_compare.configure_threads()
    # TF32 matmuls on GPUs, like XLA's default float32 precision there.
    torch.set_float32_matmul_precision("high")
    inductor_cache = None
    if cfg.torch_compile:
        try:
            import torch._inductor.config as inductor_config
            from torch._inductor.runtime.cache_dir_utils import cache_dir

            inductor_cache = {"fx_graph_cache": bool(inductor_config.fx_graph_cache),
                              "dir": cache_dir()}
        except Exception:  # noqa: BLE001 - informational only
            inductor_cache = None
    return {
        "status": "ok", "version": str(torch.__version__),
        # torch.compile's first call reads compiled graphs from this on-disk cache when an
        # earlier run on the machine compiled the same graphs: its "compile s" is then small.
        "inductor_cache": inductor_cache,
        "objectrl": torch_compare.objectrl_version(),
        "device": "cuda" if use_cuda else "cpu", "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "compile": cfg.torch_compile, "compile_methods": list(cfg.torch_compile_methods),
    }


def run_suite(cfg: Config, *, stream: Any = sys.stderr) -> dict[str, Any]:
    """Runs every measurement of ``cfg`` and returns the JSON-serializable results.

    Args:
      cfg: the suite settings.
      stream: where progress lines go.

    Returns:
      A dictionary with ``meta``, ``device``, ``config``, ``shapes``, ``records``, ``mc``,
      ``ensemble``, ``rl_update``, ``natural`` (the user-style rows), ``memory``, ``torch`` and
      ``targets``.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    info = device_info()
    shapes = [SHAPES[name] for name in cfg.shapes]
    torch_info = _torch_info(cfg, info["platform"])
    per_shape = {
        s.name: (len(cfg.run_methods) + 2 + (torch_info["status"] == "ok")
                 + any(m in MC_METHODS for m in cfg.run_methods)
                 + (sum(m in cfg.run_methods for m in cfg.ensemble_methods)
                    if s.name in cfg.ensemble_shapes else 0)
                 + bool(natural_rows(s, cfg, cfg.run_methods)))
        for s in shapes
    }
    n_rl = len(cfg.rl_members) * len(cfg.rl_widths) if cfg.rl_update else 0
    progress = _Progress(sum(per_shape.values()) + n_rl, stream, cfg.max_minutes)
    print(f"device: {info['platform']} ({info['device_kind']}), {info['device_count']} device(s); "
          f"host {info['processor']}, {info['cpu_count']} CPUs", file=stream, flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
          file=stream, flush=True)
    if torch_info["status"] == "ok":
        print(f"PyTorch comparison: ObjectRL {torch_info['objectrl']} layers on "
              f"{torch_info['device']}, {torch_info['threads']} threads (OMP_WAIT_POLICY="
              f"{torch_info['omp_wait_policy']}), torch.compile "
              f"{'for ' + ','.join(cfg.torch_compile_methods) if cfg.torch_compile else 'off'}",
              file=stream, flush=True)
    else:
        print(f"PyTorch comparison: {torch_info['status']}", file=stream, flush=True)
    records: list[dict[str, Any]] = []
    mc: list[dict[str, Any]] = []
    ensemble: list[dict[str, Any]] = []
    torch_records: list[dict[str, Any]] = []
    peaks: list[dict[str, Any]] = []
    skipped: list[str] = []
    rl_records: list[dict[str, Any]] = []
    natural_records: list[dict[str, Any]] = []

    def run_sac() -> None:
        if cfg.rl_update:
            rl_records.extend(sac.run_rl_updates(
                critics=cfg.run_rl_critics, members=cfg.rl_members, widths=cfg.rl_widths,
                time_group=lambda calls: _time_group(calls, cfg), progress=progress, seed=cfg.seed,
            ))

    # Most important first, for the soft time limit: the first shape (the RL shape by
    # default) with its ensembles, then the SAC update, then the other shapes.
    for index, shape in enumerate(shapes):
        reason = progress.out_of_time()
        if reason:
            skipped.append(f"shape {shape.name}: {reason}")
            progress.note(f"shape {shape.name} {reason}")
        else:
            out = _bench_shape(shape, cfg, progress, torch_info)
            records += out["records"]
            mc += out["mc"]
            ensemble += out["ensemble"]
            torch_records += out["torch"]
            skipped += out["skipped"]
            natural_records += out["natural"]
            peaks.append({"after_shape": shape.name, **memory.process_peak()})
        if index == 0:
            run_sac()
    _add_ratios(records)
    torch_result = dict(torch_info)
    if torch_info["status"] == "ok":
        torch_result["records"] = torch_records
    done_shapes = {r["shape"] for r in records}
    results: dict[str, Any] = {
        "meta": {
            "suite": "bayeslayers_jax benchmarks",
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_s": None,
            "argv": sys.argv,
            "dtype": "float32",
            "skipped": skipped,
            "note": None,
        },
        "device": info,
        "config": dataclasses.asdict(cfg),
        "shapes": {s.name: {"batch": s.batch, "widths": list(s.widths), "label": s.label(),
                            "description": s.description, "mc_samples": s.mc_samples}
                   for s in shapes if s.name in done_shapes},
        "records": records,
        "mc": mc,
        "ensemble": ensemble,
        "rl_update": rl_records,
        "natural": natural_records,
        "memory": {"process_peaks": peaks},
        "torch": torch_result,
    }
    results["targets"] = evaluate_targets(results)
    results["meta"]["wall_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return results
