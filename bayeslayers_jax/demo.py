"""Quickstart demo: ``python -m bayeslayers_jax.demo [--steps N] [--out DIR] [--seed S]``.

The toy regression problem of Hernandez-Lobato & Adams (2015): 20 training inputs
``x ~ U[-4, 4]``, targets ``y = x**3 + eps`` with ``eps ~ N(0, 3**2)``. Four
``BayesianMLP(features=[100, 1])`` networks (one hidden layer of 100 ReLU units, as in the
paper) are trained full-batch with Adam on the negative ELBO per example
(:func:`bayeslayers_jax.elbo_loss`):

* ``MAP``: the means of a ``'bbb'`` network, negative log posterior (Gaussian prior as L2);
* ``BBB``: Bayes by Backprop, one weight sample per step;
* ``LR``: local reparameterization, one noise sample per step;
* ``CLT``: sampling-free moment propagation with the closed-form expected log-likelihood.

Modelling choices (and why):

* Inputs and targets are standardized with the training set's mean and std; results are
  reported in the original units.
* The observation noise is *known* (std 3, i.e. ``3 / std(y_train)`` after scaling) and fixed
  by default: with 20 points a learned noise level is poorly identified and would mix
  aleatoric with epistemic uncertainty, and the demo is about the latter.
* ``--learn-noise`` instead wraps every network in :class:`~bayeslayers_jax.LearnedNoise`
  (the noise std is trained with the weights, from 1 in standardized units) and reports the
  intervals the calibrated way: the noise is refitted on a validation set of another 20
  points (:func:`~bayeslayers_jax.calibrated_noise_var`), because the learned one contains
  the training-set epistemic variance and the predictive would count it twice (see
  :class:`~bayeslayers_jax.LearnedNoise`). The table then also lists both noise stds (the truth is 3).
  Measured (seed 0, 3000 steps): with 20 points the noise is not identified; the Bayesian
  networks settle on "everything is noise" (learned std about 41, RMSE about 25; the
  calibrated noise is then 0, as the epistemic variance already over-covers) and MAP learns
  11. The default therefore keeps the known noise; notebook 01 shows the learned noise on 200
  points, where it is identified and the recalibration matters.
* Priors ``N(0, 1)`` on the first layer and ``N(0, 1/100)`` (std ``1/sqrt(fan_in)``) on the
  output layer, set by replacing the ``'prior'`` subtree after ``init``: the prior over
  functions then has output std of order one, the scale of the standardized targets. A unit
  prior on the output layer would give prior function std ~ ``sqrt(100 / 2)`` ~ 7 and bands
  far wider than the data warrant.

The run prints one table row per method: test NLL (per point, original units), RMSE, the
coverage of the 95% predictive interval (``mean +- 1.96 * sqrt(total variance)``) inside the
training range ``[-4, 4]`` and outside it (``[-6, -4) U (4, 6]``), and the training time per
step; it writes ``results.md`` (the table), ``results.json`` and ``demo.png`` into ``--out``
and closes with a line listing those files. ``demo.png`` has one column per method: on top
the data, the truth, the predictive mean and the 95% bands (total, i.e. epistemic plus
observation noise, and epistemic alone), with the region outside the training range shaded;
below, the half-widths of both bands on a log scale with the noise's alone, so the total band
can be told from the epistemic one even where the latter is much wider than the noise.

Importing this module has no side effects and compiles nothing; matplotlib is imported
only when the PNG is written.

References:
  Hernandez-Lobato & Adams 2015, "Probabilistic Backpropagation for Scalable Learning of
  Bayesian Neural Networks", ICML (figure 1's toy problem).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from functools import partial

from bayeslayers_jax.metrics import interval_coverage, regression_nll, rmse
from bayeslayers_jax.linen import BayesianMLP, LearnedNoise, elbo_loss, learned_noise_var, update_prior
from bayeslayers_jax.prediction import calibrated_noise_var, predictive

__all__ = ["METHODS", "make_toy_data", "train_model", "run_demo", "format_table", "main"]

#: Method name -> (BayesianMLP layer_type, MAP training).
METHODS = {"MAP": ("bbb", True), "BBB": ("bbb", False), "LR": ("lr", False), "CLT": ("clt", False)}

NOISE_STD = 3.0
#: Initial noise std of ``--learn-noise`` in standardized units (about 4 in the original ones):
#: small, so the mean is fitted before the noise grows; from 1 (the targets' whole std) the
#: 20-point ELBO stays at the "everything is noise" optimum.
NOISE_INIT_STD = 0.1
NUM_TRAIN = 20
HIDDEN = 100


def _cube(x):
    return x * x * x


def make_toy_data(seed, num_train=NUM_TRAIN, num_test=1000):
    """Training and test sets of the toy problem (float32 NumPy arrays of shape ``(n, 1)``).

    Generated with NumPy (``numpy.random.default_rng(seed)``): no compilation needed.

    Returns:
      dict with ``x_train``/``y_train`` (``x ~ U[-4, 4]``), ``x_in``/``y_in`` (``num_test``
      test points in ``[-4, 4]``) and ``x_out``/``y_out`` (``num_test`` in
      ``[-6, -4) U (4, 6]``); ``y = x**3 + N(0, 3**2)`` everywhere.

    Examples:
      >>> import numpy as np
      >>> from bayeslayers_jax.demo import make_toy_data
      >>> data = make_toy_data(0, num_test=5)
      >>> sorted(data), data["x_train"].shape, data["x_out"].dtype
      (['x_in', 'x_out', 'x_train', 'y_in', 'y_out', 'y_train'], (20, 1), dtype('float32'))
      >>> bool(np.all((np.abs(data["x_out"]) > 4) & (np.abs(data["x_out"]) <= 6)))
      True
    """
    rng = np.random.default_rng(seed)
    data = {
        "x_train": rng.uniform(-4.0, 4.0, (num_train, 1)),
        "x_in": rng.uniform(-4.0, 4.0, (num_test, 1)),
        "x_out": rng.uniform(4.0, 6.0, (num_test, 1)) * rng.choice([-1.0, 1.0], (num_test, 1)),
    }
    for name in ("train", "in", "out"):
        x = data[f"x_{name}"]
        data[f"y_{name}"] = x**3 + NOISE_STD * rng.standard_normal(x.shape)
    return {name: v.astype(np.float32) for name, v in data.items()}


@jax.jit
def _scores(y_in, y_out, mean_in, var_in, mean_out, var_out):
    """Test metrics in the original units (one compilation shared by every method)."""
    return {
        "nll": regression_nll(y_in, mean_in, var_in),
        "rmse": rmse(y_in, mean_in),
        "coverage_in": interval_coverage(y_in, mean_in, var_in, 0.95),
        "coverage_out": interval_coverage(y_out, mean_out, var_out, 0.95),
        "nll_out": regression_nll(y_out, mean_out, var_out),
    }


@partial(jax.jit, static_argnums=0)
def _init(model, keys, x):
    return model.init(keys, x)


def train_model(model, variables, x, y, *, steps, key, noise_var, map=False, learning_rate=1e-2,
                num_chunks=10, progress=None):
    """Trains ``model`` full-batch with Adam on :func:`bayeslayers_jax.elbo_loss`.

    The steps run inside ``jax.lax.scan`` in ``num_chunks`` jit-compiled chunks, so a progress
    line can be printed between chunks. Compilation happens before the clock starts.

    Args:
      model, variables: the network and its initial variables.
      x, y: training inputs and targets (the whole training set: one batch).
      steps: number of optimizer steps.
      key: PRNG key (one subkey per step for the weight/noise sample).
      noise_var: observation-noise variance (in the scaled units of ``y``); ``None`` for a
        :class:`~bayeslayers_jax.LearnedNoise` model.
      map: MAP training (means only, Gaussian prior as the regularizer).
      learning_rate: Adam step size.
      num_chunks: number of progress reports.
      progress: ``callable(done_steps, loss)`` or ``None``.

    Returns:
      ``(variables, losses, seconds_per_step)``: trained variables, the loss of every step
      (NumPy array) and the measured wall time per step (excluding compilation).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    others = {name: col for name, col in variables.items() if name not in ("params", "kl")}
    optimizer = optax.adam(learning_rate)
    params = variables["params"]
    carry = (params, optimizer.init(params))

    def loss_fn(p, k):
        return elbo_loss(model, {**others, "params": p}, x, y, key=k, num_train_examples=x.shape[0],
                         noise_var=noise_var, map=map)

    def step(carry, k):
        p, opt_state = carry
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, k)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    run = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))
    keys = jax.random.split(key, steps)
    bounds = np.linspace(0, steps, min(num_chunks, steps) + 1).astype(int)
    chunks = [keys[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    compiled = {}
    for ks in chunks:
        if ks.shape[0] not in compiled:
            compiled[ks.shape[0]] = run.lower(carry, ks).compile()
    losses = []
    start = time.perf_counter()
    for ks in chunks:
        carry, chunk_losses = compiled[ks.shape[0]](carry, ks)
        chunk_losses = np.asarray(chunk_losses)  # blocks until the chunk is done
        losses.append(chunk_losses)
        if progress is not None:
            progress(int(sum(len(c) for c in losses)), float(chunk_losses[-1]))
    seconds_per_step = (time.perf_counter() - start) / steps
    return {**others, "params": carry[0]}, np.concatenate(losses), seconds_per_step


_BLUE, _ORANGE = "#9ecae1", "#fdae6b"  # light fills of the C0 / C1 line colors


def _plot(results, data, scaled, out_path):
    """Two rows of panels, one column per method.

    Top: data, truth, predictive mean and the 95% bands (total and epistemic). Bottom: the
    half-widths of both bands on a log scale, with the observation noise's alone: where the
    epistemic band is wide the total band hugs it (noise of +-5.9 on a +-250 axis), and
    the bottom row shows the difference everywhere.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.6), sharex=True, sharey="row",
                             gridspec_kw={"height_ratios": (3, 2)}, squeeze=False)
    grid = scaled["grid"]
    noise = 1.96 * NOISE_STD
    for k, (name, res) in enumerate(results.items()):
        top, bottom = axes[0, k], axes[1, k]
        mean, epi, total = res["curve_mean"], res["curve_epistemic_std"], res["curve_total_std"]
        for ax in (top, bottom):
            ax.axvspan(-6, -4, color="0.9", zorder=0, label="outside the training range")
            ax.axvspan(4, 6, color="0.9", zorder=0)
        # Opaque bands, epistemic drawn over total: the orange rim is what the noise adds.
        top.fill_between(grid, mean - 1.96 * total, mean + 1.96 * total, color=_ORANGE, lw=0,
                         label="95% total (epistemic + noise)")
        top.fill_between(grid, mean - 1.96 * epi, mean + 1.96 * epi, color=_BLUE, lw=0,
                         label="95% epistemic")
        top.plot(grid, grid**3, "k--", lw=1, label="truth $x^3$")
        top.plot(grid, mean, "C0", lw=1.5, label="predictive mean")
        top.plot(data["x_train"][:, 0], data["y_train"][:, 0], "r.", ms=6, label="training data")
        top.set_ylim(-250, 250)
        top.set_title(f"{name}  (test NLL {res['nll']:.2f})")
        bottom.plot(grid, 1.96 * total, "C1", lw=2, label="total band half-width")
        if np.any(epi > 0):
            bottom.plot(grid, 1.96 * epi, "C0", lw=1.5, label="epistemic band half-width")
        else:
            bottom.text(0.5, 0.5, "MAP: no epistemic band", transform=bottom.transAxes,
                        ha="center", va="center", fontsize=8)
        bottom.axhline(noise, color="k", ls=":", lw=1, label=f"noise alone (1.96 x {NOISE_STD:g})")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_formatter(ScalarFormatter())
        bottom.yaxis.set_minor_locator(NullLocator())
        bottom.set_xlim(-6, 6)
        bottom.set_xlabel("x")
    axes[0, 0].set_ylabel("y")
    axes[1, 0].set_ylabel("95% band half-width (log)")
    low, high = axes[1, 0].get_ylim()
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if low <= t <= high]
    axes[1, 0].yaxis.set_major_locator(FixedLocator(ticks))
    # One legend for the figure, from the last (Bayesian) column, which has every element.
    handles, labels = [], []
    for ax in axes[:, -1]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out_path, dpi=110)
    plt.close(fig)


def run_demo(steps=3000, out_dir="demo_output", seed=0, *, methods=tuple(METHODS),
             hidden=HIDDEN, num_test=1000, num_samples=200, learning_rate=1e-2, plot=True,
             verbose=True, learn_noise=False):
    """Trains the demo's models, evaluates them, writes the PNG and tables; returns the results.

    Args:
      steps: Adam steps per method.
      out_dir: output folder (created); ``None`` writes nothing.
      seed: seed of the data, the initialization and the sampling keys.
      methods: subset of ``METHODS`` to run.
      hidden: width of the hidden layer.
      num_test: test points inside and (again) outside the training range.
      num_samples: Monte Carlo samples for the BBB/LR predictive.
      learning_rate: Adam step size.
      plot: write ``demo.png``.
      verbose: print progress and the table.
      learn_noise: learn the noise (:class:`~bayeslayers_jax.LearnedNoise`) and report the
        predictive with the noise refitted on a validation set (see the module docstring).

    Returns:
      dict: method name -> dict with ``nll``, ``rmse``, ``coverage_in``, ``coverage_out``,
      ``seconds_per_step``, ``initial_loss``, ``final_loss`` (floats; with ``learn_noise``
      also ``noise_std_learned`` and ``noise_std_calibrated``, original units), ``losses`` and
      the plotted curves (NumPy arrays); plus the key ``'_table'`` holding the formatted
      table (str).

    Examples:
      A tiny run (a few seconds; the real demo uses the defaults):

      >>> from bayeslayers_jax.demo import run_demo
      >>> res = run_demo(steps=20, out_dir=None, methods=("CLT",), hidden=8, num_test=20,
      ...                verbose=False)
      >>> sorted(k for k in res if not k.startswith("_"))
      ['CLT']
      >>> res["CLT"]["final_loss"] < res["CLT"]["initial_loss"]
      True
      >>> res = run_demo(steps=20, out_dir=None, methods=("LR",), hidden=8, num_test=20,
      ...                num_samples=8, verbose=False, learn_noise=True)
      >>> res["LR"]["noise_std_learned"] > 0, res["LR"]["noise_std_calibrated"] >= 0
      (True, True)
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be among {tuple(METHODS)}, got {unknown}")
    key = jax.random.key(seed)
    init_key, train_key, pred_key = jax.random.split(key, 3)
    data = make_toy_data(seed, num_test=num_test)
    x_mu, x_sd = data["x_train"].mean(), data["x_train"].std()
    y_mu, y_sd = data["y_train"].mean(), data["y_train"].std()

    def sx(x):
        return jnp.asarray((x - x_mu) / x_sd, jnp.float32)

    y_mu, y_sd = float(y_mu), float(y_sd)
    noise_var = float((NOISE_STD / y_sd) ** 2)
    grid = np.linspace(-6, 6, 300, dtype=np.float32)
    scaled = {"grid": grid}
    x_tr, y_tr = sx(data["x_train"]), jnp.asarray((data["y_train"] - y_mu) / y_sd, jnp.float32)

    if learn_noise:  # a validation set of the training set's size, for the calibrated noise
        val = make_toy_data(seed + 10_000, num_test=1)
        x_val, y_val = sx(val["x_train"]), jnp.asarray((val["y_train"] - y_mu) / y_sd, jnp.float32)
    x_all = np.concatenate([data["x_in"], data["x_out"], grid[:, None]])
    n_in, n_out = len(data["x_in"]), len(data["x_out"])

    results: dict[str, Any] = {}
    for i, name in enumerate(methods):
        layer_type, is_map = METHODS[name]
        model = BayesianMLP(features=(hidden, 1), layer_type=layer_type)
        if learn_noise:
            model = LearnedNoise(model, init_std=NOISE_INIT_STD)  # params gain "noise_log_std"
        init_keys = {"params": jax.random.fold_in(init_key, i), "sample": jax.random.fold_in(init_key, 100 + i)}
        variables = _init(model, init_keys, x_tr)
        variables = update_prior(variables, "layers_1", weight_std=1.0 / np.sqrt(hidden))

        def progress(done, loss, name=name):
            if verbose:
                print(f"  [{name:>3}] step {done:>6d}/{steps}  loss {loss:9.4f}", flush=True)

        variables, losses, sec = train_model(
            model, variables, x_tr, y_tr, steps=steps, key=jax.random.fold_in(train_key, i),
            noise_var=None if learn_noise else noise_var, map=is_map, learning_rate=learning_rate,
            progress=progress,
        )
        mode = "map" if is_map else None
        extra = {}
        report_noise = noise_var
        if learn_noise:
            report_noise = calibrated_noise_var(model, variables, x_val, y_val, key=jax.random.fold_in(pred_key, 50 + i),
                                                num_samples=num_samples, mode=mode)
            extra = {"noise_std_learned": float(jnp.sqrt(learned_noise_var(model, variables)[0])) * y_sd,
                     "noise_std_calibrated": float(jnp.sqrt(report_noise[0])) * y_sd}

        pred = jax.jit(
            lambda v, k, s2, model=model, mode=mode: predictive(
                model, v, sx(x_all), key=k, num_samples=num_samples, mode=mode, noise_var=s2
            )
        )(variables, jax.random.fold_in(pred_key, i), report_noise)
        mean = np.asarray(pred.mean[:, 0]) * y_sd + y_mu
        total_var = np.asarray(pred.total_var[:, 0]) * y_sd**2
        epi_var = np.asarray(pred.epistemic_var[:, 0]) * y_sd**2
        inside, outside, curve = slice(0, n_in), slice(n_in, n_in + n_out), slice(n_in + n_out, None)
        scores = _scores(data["y_in"][:, 0], data["y_out"][:, 0], mean[inside], total_var[inside],
                         mean[outside], total_var[outside])
        results[name] = {
            **{k: float(v) for k, v in scores.items()},
            **extra,
            "seconds_per_step": sec,
            "initial_loss": float(losses[0]),
            "final_loss": float(losses[-1]),
            "losses": losses,
            "curve_mean": mean[curve],
            "curve_epistemic_std": np.sqrt(epi_var[curve]),
            "curve_total_std": np.sqrt(total_var[curve]),
        }
    table = format_table(results)
    if verbose:
        print(table, flush=True)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        written = []
        path = os.path.join(out_dir, "results.md")
        with open(path, "w") as f:
            f.write(table + "\n")
        written.append(path)
        summary = {
            name: {k: v for k, v in res.items() if isinstance(v, float)} for name, res in results.items()
        }
        path = os.path.join(out_dir, "results.json")
        with open(path, "w") as f:
            json.dump({"steps": steps, "seed": seed, "methods": summary}, f, indent=2)
        written.append(path)
        if plot:
            path = os.path.join(out_dir, "demo.png")
            _plot(results, data, scaled, path)
            written.append(path)
        if verbose:
            print(f"wrote {', '.join(written)}", flush=True)
    results["_table"] = table
    return results


def format_table(results):
    """The results as a Markdown table (one row per method).

    Examples:
      >>> from bayeslayers_jax.demo import format_table
      >>> row = {"nll": 3.06, "rmse": 5.85, "coverage_in": 0.979, "coverage_out": 0.18,
      ...        "seconds_per_step": 7.9e-5}
      >>> print(format_table({"CLT": row, "_table": "skipped"}))
      | method | test NLL | RMSE | 95% coverage in [-4,4] | 95% coverage outside | ms/step |
      |---|---:|---:|---:|---:|---:|
      | CLT | 3.06 | 5.85 | 0.979 | 0.180 | 0.079 |
    """
    rows = {name: r for name, r in results.items() if not name.startswith("_")}
    noise = any("noise_std_learned" in r for r in rows.values())
    lines = [
        "| method | test NLL | RMSE | 95% coverage in [-4,4] | 95% coverage outside | ms/step |"
        + (" noise std learned | noise std calibrated |" if noise else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if noise else ""),
    ]
    for name, r in rows.items():
        line = (
            f"| {name} | {r['nll']:.2f} | {r['rmse']:.2f} | {r['coverage_in']:.3f} | "
            f"{r['coverage_out']:.3f} | {1e3 * r['seconds_per_step']:.3f} |"
        )
        if noise:
            line += f" {r['noise_std_learned']:.2f} | {r['noise_std_calibrated']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m bayeslayers_jax.demo",
        description="Train MAP, BBB, LR and CLT networks on the toy cubic problem of "
        "Hernandez-Lobato & Adams (2015); print a table and write a PNG.",
    )
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per method (default 3000)")
    parser.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--learn-noise", action="store_true",
                        help="learn the noise std (LearnedNoise) and report intervals with the noise "
                        "refitted on a validation set")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    start = time.perf_counter()
    print(f"bayeslayers-jax demo: {len(METHODS)} methods x {args.steps} steps on "
          f"{jax.devices()[0].platform}", flush=True)
    run_demo(args.steps, args.out, args.seed, learn_noise=args.learn_noise)
    print(f"total wall time {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
