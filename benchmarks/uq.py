r"""Real-data uncertainty benchmark: ``python -m benchmarks uq [--quick] [--out DIR]``.

What an applied researcher would run before trusting the package's uncertainties: the
package's MAP, BBB, LR and CLT networks (:class:`bayeslayers_jax.BayesianMLP`), a deep
ensemble of 5 MAP networks (:class:`bayeslayers_jax.Ensemble`, vmapped) and MC dropout (a
hand-written ``flax.linen`` network, :mod:`benchmarks.uq_baselines`), on three data sets
bundled with scikit-learn (nothing is downloaded):

* **diabetes** regression (442 patients, 10 features): 10 random 90/10 train/test splits,
  one hidden layer of 50 units, inputs and targets standardized with the training part's
  statistics. Metrics are reported in the **original units** of the target (NLL in nats of
  the original target, RMSE in its units): ``NLL_orig = NLL_std + log(std_y)``.
* **breast cancer** (569 tumours, 30 features, 2 classes): 10 stratified 80/20 splits, one
  hidden layer of 50 units, two logits.
* **digits** 0-4 in distribution, 5-9 out of distribution (OOD): 3 seeds of stratified
  80/20 splits of the 0-4 images, two hidden layers of 100 units, five logits; every 5-9
  image is an OOD test input.

**Protocol** (the same for every method): the training part of each split loses a
validation part (20%, stratified for classification) that is never trained on; inputs are
standardized with the remaining training examples' statistics. Every method trains with Adam
at one learning rate and one batch size per data set (minibatches reshuffled every epoch,
``lax.scan`` over the minibatches, all splits vmapped into one compiled program), and is
evaluated at a grid of epochs and at one long budget. The **selected budget** of a method is
the grid epoch with the lowest validation NLL averaged over the splits (never the test
data); the **long budget** is reported separately. Test metrics of every checkpoint are kept
in the JSON (training curves), but only those two budgets are tabled.

Losses: the package's :func:`bayeslayers_jax.elbo_loss` (negative ELBO per training example:
sampled likelihood for BBB/LR, closed form for CLT regression, for CLT classification the
default Monte Carlo expectation over the Gaussian logits and, as the method ``'clt_bound'``,
the former default, the Jensen bound; for MAP and the ensemble the Gaussian prior as an L2
penalty, the same penalty for dropout). Regression learns a homoscedastic observation noise
jointly with the weights (:class:`bayeslayers_jax.LearnedNoise`, one per ensemble member);
the predictive is the equal mixture of Gaussians ``N(f_c, s_c^2)`` over weight samples (BBB,
LR), dropout masks or members (ensemble), or ``N(m, v + s^2)`` for CLT. Reported: the NLL of
its moment-matched Gaussian and of the mixture itself
(:func:`bayeslayers_jax.mixture_regression_nll`), the RMSE of its mean, the coverage of its
central 95% interval and the learned noise std; and the NLL and coverage with the noise
refitted on the validation part (:func:`bayeslayers_jax.fit_noise_var`: the learned noise
counts the training-set epistemic variance twice, see :class:`bayeslayers_jax.LearnedNoise`).
Classification: the predictive probabilities of :func:`bayeslayers_jax.predictive_probs`
(sample average, member average, or CLT's probit approximation), their NLL, accuracy and
expected calibration error (15 bins), and on digits the AUROC of separating OOD from
in-distribution test images by the predictive entropy and, for every method with samples
(CLT: samples of its Gaussian logits), by the mutual information; the JSON also holds the NLL
and ECE of the sample average (``nll_mc``, ``ece_mc``: for CLT, its Monte Carlo predictive).
Everything is mean +- standard error over splits (seeds). Training time is the wall time of
all splits trained together (vmapped), compilation excluded.

The training loop is the benchmark's own (:func:`make_train`) rather than
:func:`bayeslayers_jax.fit`: it vmaps every split into one program and stops at the
checkpoints without recompiling (``fit`` jit-compiles its epoch anew at every call and
trains one model).

References:
  Hernandez-Lobato & Adams 2015 (the UCI regression protocol: random 90/10 splits, one hidden
  layer of 50); Lakshminarayanan, Pritzel & Blundell 2017 (deep ensembles); Gal & Ghahramani
  2016 (MC dropout); Ovadia et al. 2019, "Can You Trust Your Model's Uncertainty?".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayeslayers_jax import (
    BayesianMLP,
    Ensemble,
    LearnedNoise,
    accuracy,
    auroc,
    categorical_nll,
    categorical_nll_from_logits,
    elbo_loss,
    expected_calibration_error,
    fit_noise_var,
    gaussian_nll,
    interval_coverage,
    learned_noise_var,
    mixture_categorical_nll,
    mixture_regression_nll,
    mutual_information,
    neg_elbo,
    predictive,
    predictive_entropy,
    predictive_probs,
    regression_nll,
    rmse,
)
from bayeslayers_jax import NOISE_PARAM
from benchmarks.timing import compile_jitted
from benchmarks.uq_baselines import DropoutMLP, l2_penalty, mc_dropout_outputs

__all__ = [
    "METHODS",
    "TASKS",
    "Task",
    "UQConfig",
    "load_task",
    "main",
    "markdown_report",
    "run_benchmark",
    "summarize",
]

#: Methods, in table order.
METHODS = ("map", "bbb", "lr", "clt", "clt_bound", "ens", "dropout")
LABELS = {"map": "MAP", "bbb": "BBB", "lr": "LR", "clt": "CLT", "clt_bound": "CLT, bound loss",
          "ens": "Ensemble (5 MAP)", "dropout": "MC dropout"}
#: Methods that only differ from another one for classification (skipped for regression).
CLASSIFICATION_ONLY = ("clt_bound",)
#: Members of the deep ensemble.
ENSEMBLE_SIZE = 5
#: Dropout probability of the MC dropout baseline (fixed, not tuned).
DROPOUT_RATE = 0.1
_DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: Output folder of ``--quick`` runs (never the tracked results).
QUICK_OUT = os.path.join(tempfile.gettempdir(), "bayeslayers_jax_uq_quick")


@dataclasses.dataclass(frozen=True)
class Task:
    """One data set and its protocol.

    Attributes:
      name: ``'diabetes'``, ``'breast_cancer'`` or ``'digits'``.
      kind: ``'regression'`` or ``'classification'``.
      hidden: hidden widths.
      num_splits: random splits (seeds).
      test_fraction: test part of every split.
      val_fraction: validation part carved from the training part.
      batch_size: minibatch size.
      grid: epochs at which the validation NLL is measured (the budget is chosen among them).
      long_epochs: the long budget, reported separately.
      ood: whether OOD inputs are evaluated (digits 5-9).
    """

    name: str
    kind: str
    hidden: tuple[int, ...]
    num_splits: int
    test_fraction: float
    val_fraction: float
    batch_size: int
    grid: tuple[int, ...]
    long_epochs: int
    ood: bool = False

    @property
    def checkpoints(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.grid) | {self.long_epochs}))


#: The full benchmark's tasks.
TASKS = {
    "diabetes": Task("diabetes", "regression", (50,), 10, 0.1, 0.2, 32,
                     (25, 50, 100, 200, 400), 1000),
    "breast_cancer": Task("breast_cancer", "classification", (50,), 10, 0.2, 0.2, 32,
                          (10, 25, 50, 100, 200), 500),
    "digits": Task("digits", "classification", (100, 100), 3, 0.2, 0.2, 32,
                   (10, 25, 50, 100), 300, ood=True),
}


def _quick(task: Task) -> Task:
    return dataclasses.replace(task, num_splits=2, grid=(2, 4), long_epochs=6)


@dataclasses.dataclass(frozen=True)
class UQConfig:
    """Settings of one run.

    Attributes:
      tasks: task names (keys of :data:`TASKS`).
      methods: method names (:data:`METHODS`).
      learning_rate: Adam's learning rate, the same for every method.
      num_samples: Monte Carlo samples of the predictive (weights, dropout masks, CLT logits).
      seed: base seed (split ``s`` uses ``seed + s``).
      quick: smoke settings (2 splits, epochs 2/4/6): the numbers are not measurements.
    """

    tasks: tuple[str, ...] = tuple(TASKS)
    methods: tuple[str, ...] = METHODS
    learning_rate: float = 1e-3
    num_samples: int = 100
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        for name in self.tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}: choose from {tuple(TASKS)}")
        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}: choose from {METHODS}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples!r}")

    def task(self, name: str) -> Task:
        return _quick(TASKS[name]) if self.quick else TASKS[name]


# --------------------------------------------------------------------------------------------
# Data


def _standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Standardizes with ``train``'s mean and std (a constant column is only centred)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple((a - mean) / std for a in (train,) + others)


def load_task(task: Task, seed: int = 0) -> dict[str, Any]:
    """The splits of ``task`` stacked on a leading split axis (float32 inputs).

    Returns:
      A dict with ``x_train (S, n, d)``, ``y_train`` (``(S, n, 1)`` standardized targets or
      ``(S, n)`` int32 labels), ``x_eval`` / ``y_eval`` (validation, test and, for digits,
      OOD examples concatenated in that order; OOD labels are ``-1`` and never used),
      the sizes ``n_val``, ``n_test``, ``n_ood``, ``y_scale (S,)`` (the training targets' std,
      1 for classification), ``num_classes`` and ``indices`` (per part ``'train'``, ``'val'``,
      ``'test'``, one index array per split into the in-distribution data).
    """
    from sklearn import datasets
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    regression = task.kind == "regression"
    if task.name == "diabetes":
        x_all, y_all = datasets.load_diabetes(return_X_y=True)
    elif task.name == "breast_cancer":
        x_all, y_all = datasets.load_breast_cancer(return_X_y=True)
    elif task.name == "digits":
        x_all, y_all = datasets.load_digits(return_X_y=True)
    else:
        raise ValueError(f"unknown task {task.name!r}")
    x_ood = None
    if task.ood:
        x_ood = x_all[y_all >= 5]
        x_all, y_all = x_all[y_all < 5], y_all[y_all < 5]
    splitter = ShuffleSplit if regression else StratifiedShuffleSplit
    parts: dict[str, list] = {k: [] for k in ("x_train", "y_train", "x_eval", "y_eval", "y_scale")}
    indices: dict[str, list] = {"train": [], "val": [], "test": []}
    n_val = n_test = 0
    for s in range(task.num_splits):
        outer = splitter(n_splits=1, test_size=task.test_fraction, random_state=seed + s)
        train_idx, test_idx = next(outer.split(x_all, y_all))
        inner = splitter(n_splits=1, test_size=task.val_fraction, random_state=seed + 1000 + s)
        fit_pos, val_pos = next(inner.split(x_all[train_idx], y_all[train_idx]))
        fit_idx, val_idx = train_idx[fit_pos], train_idx[val_pos]
        n_val, n_test = len(val_idx), len(test_idx)
        for part, idx in (("train", fit_idx), ("val", val_idx), ("test", test_idx)):
            indices[part].append(idx)
        evals = [x_all[val_idx], x_all[test_idx]] + ([x_ood] if x_ood is not None else [])
        x_fit, *x_evals = _standardize(x_all[fit_idx], *evals)
        if regression:
            y_fit, y_val, y_test = _standardize(y_all[fit_idx], y_all[val_idx], y_all[test_idx])
            y_eval = np.concatenate([y_val, y_test])[:, None]
            y_fit = y_fit[:, None]
            scale = float(y_all[fit_idx].std())
        else:
            y_fit = y_all[fit_idx]
            y_eval = np.concatenate([y_all[val_idx], y_all[test_idx]]
                                    + ([np.full(len(x_ood), -1)] if x_ood is not None else []))
            scale = 1.0
        parts["x_train"].append(x_fit)
        parts["y_train"].append(y_fit)
        parts["x_eval"].append(np.concatenate(x_evals))
        parts["y_eval"].append(y_eval)
        parts["y_scale"].append(scale)
    y_dtype = np.float32 if regression else np.int32
    return {
        "x_train": np.stack(parts["x_train"]).astype(np.float32),
        "y_train": np.stack(parts["y_train"]).astype(y_dtype),
        "x_eval": np.stack(parts["x_eval"]).astype(np.float32),
        "y_eval": np.stack(parts["y_eval"]).astype(y_dtype),
        "y_scale": np.asarray(parts["y_scale"], np.float32),
        "n_val": n_val,
        "n_test": n_test,
        "n_ood": 0 if x_ood is None else len(x_ood),
        "num_classes": None if regression else int(y_all.max()) + 1,
        "indices": indices,
    }


# --------------------------------------------------------------------------------------------
# Methods: init, loss, predictive


@dataclasses.dataclass(frozen=True)
class Method:
    """What the training and evaluation loops need of a method (one split, unbatched).

    ``init(key, x) -> params`` (the trainable tree, learned noise included);
    ``loss(params, x, y, key) -> scalar``; ``predict(params, x, key)``: for regression the
    equal mixture's components ``(means, epistemic_vars, noise_vars)``, each ``(C, B, 1)`` in
    standardized units (``N(means[c], epistemic_vars[c] + noise_vars[c])``); for
    classification ``(probs (B, K), prob_samples (S, B, K) or None)``.
    """

    init: Callable
    loss: Callable
    predict: Callable


def _member_noise(noise: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A learned noise variance, ``(D,)`` or ``(M, D)`` (one per member), as ``shape = (C, B, D)``."""
    if noise.ndim == 2:  # one per member: the members are the components
        noise = noise[:, None, :]
    return jnp.broadcast_to(noise, shape)


def _package_method(name: str, task: Task, num_outputs: int, num_train: int,
                    num_samples: int, x_example: np.ndarray) -> Method:
    """MAP, BBB, LR, CLT (either classification loss) or the deep ensemble, from the package."""
    regression = task.kind == "regression"
    layer_type = {"map": "lr", "ens": "lr", "clt_bound": "clt"}.get(name, name)
    net = BayesianMLP(task.hidden + (num_outputs,), layer_type=layer_type)
    member = LearnedNoise(net) if regression else net  # one noise per member of an ensemble
    model = Ensemble(member, ENSEMBLE_SIZE) if name == "ens" else member
    is_map = name in ("map", "ens")
    mode = "map" if is_map else ("clt" if layer_type == "clt" else "sample")
    loss_kwargs: dict[str, Any] = {"map": is_map}
    if regression:
        loss_kwargs["likelihood"] = "gaussian"  # with the learned noise
    else:
        loss_kwargs["likelihood"] = "categorical"
        if layer_type == "clt":
            loss_kwargs["clt_categorical"] = "bound" if name == "clt_bound" else "mc"
    # The prior collection is a constant of the method (scalar priors, one per member).
    prior = model.init(jax.random.key(0), x_example, map=True)["prior"]

    def init(key, x):
        return model.init(key, x, map=True)["params"]

    def loss(params, x, y, key):
        value, _ = elbo_loss(model, {"params": params, "prior": prior}, x, y,
                             num_train_examples=num_train, key=key, **loss_kwargs)
        return value

    def predict(params, x, key):
        v = {"params": params, "prior": prior}
        if not regression:
            p = predictive_probs(model, v, x, key=key, num_samples=num_samples, mode=mode)
            return p.probs, p.prob_samples
        p = predictive(model, v, x, key=key, num_samples=num_samples, mode=mode, noise_var=0.0)
        if mode == "clt" or p.samples is None:  # CLT, or one MAP network: one component
            means, epistemic = p.mean[None], p.epistemic_var[None]
        else:  # weight samples (BBB, LR) or the members (ensemble)
            means, epistemic = p.samples, jnp.zeros_like(p.samples)
        return means, epistemic, _member_noise(learned_noise_var(model, v), means.shape)

    return Method(init, loss, predict)


def _dropout_method(task: Task, num_outputs: int, num_train: int, num_samples: int) -> Method:
    """MC dropout (:mod:`benchmarks.uq_baselines`), with the MAP networks' L2 prior."""
    regression = task.kind == "regression"
    net = DropoutMLP(task.hidden + (num_outputs,), rate=DROPOUT_RATE)
    model = LearnedNoise(net) if regression else net

    def init(key, x):
        return model.init(key, x, deterministic=True)["params"]

    def loss(params, x, y, key):
        out = model.apply({"params": params}, x, deterministic=False, rngs={"dropout": key})
        if regression:
            nll = gaussian_nll(y, out, learned_noise_var(model, {"params": params}))
            weights = {k: v for k, v in params.items() if k != NOISE_PARAM}
        else:
            nll = categorical_nll_from_logits(y, out)
            weights = params
        return neg_elbo(nll, l2_penalty(weights), num_train)

    def predict(params, x, key):
        out = mc_dropout_outputs(model, {"params": params}, x, key, num_samples)
        if regression:
            noise = learned_noise_var(model, {"params": params})
            return out, jnp.zeros_like(out), _member_noise(noise, out.shape)
        samples = jax.nn.softmax(out, axis=-1)
        return jnp.mean(samples, axis=0), samples

    return Method(init, loss, predict)


def build_method(name: str, task: Task, data: dict[str, Any], num_samples: int) -> Method:
    """The :class:`Method` ``name`` for ``task`` on ``data`` (see :func:`load_task`)."""
    num_outputs = 1 if task.kind == "regression" else data["num_classes"]
    num_train = data["x_train"].shape[1]
    if name == "dropout":
        return _dropout_method(task, num_outputs, num_train, num_samples)
    return _package_method(name, task, num_outputs, num_train, num_samples, data["x_train"][0])


# --------------------------------------------------------------------------------------------
# Training and evaluation (jit-compiled, vmapped over splits)


def make_train(method: Method, num_train: int, batch_size: int, optimizer) -> Callable:
    """``train(state, x, y, num_epochs) -> (state, last_epoch_loss)`` for all splits at once.

    ``state = (params, opt_state, key)`` with a leading split axis, as ``x`` and ``y``;
    ``num_epochs`` is a traced scalar shared by the splits (one compilation for every
    segment). Every epoch draws a fresh permutation, drops the last incomplete minibatch and
    runs the Adam steps with ``lax.scan``.
    """
    num_batches = num_train // batch_size

    def step(carry, batch):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        value, grads = jax.value_and_grad(method.loss)(params, *batch, sub)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), value

    def train_one(state, x, y, num_epochs):
        def epoch(_, carry):
            params, opt_state, key, _loss = carry
            key, sub = jax.random.split(key)
            order = jax.random.permutation(sub, num_train)[: num_batches * batch_size]
            order = order.reshape(num_batches, batch_size)
            (params, opt_state, key), losses = jax.lax.scan(
                step, (params, opt_state, key), (x[order], y[order]))
            return params, opt_state, key, jnp.mean(losses)

        params, opt_state, key = state
        init = (params, opt_state, key, jnp.full((), jnp.nan, jnp.float32))
        params, opt_state, key, last = jax.lax.fori_loop(0, num_epochs, epoch, init)
        return (params, opt_state, key), last

    return jax.jit(jax.vmap(train_one, in_axes=(0, 0, 0, None)))


def _regression_metrics(pred, y, y_scale, n_val, n_test):
    """Test metrics (original units) with the learned noise and with the noise refitted on validation."""
    means, epistemic_c, noise_c = pred
    # Moments of the equal mixture (law of total variance).
    mean = jnp.mean(means, axis=0)
    epistemic = jnp.mean(epistemic_c, axis=0) + jnp.var(means, axis=0)
    noise = jnp.mean(noise_c, axis=0)
    val, test = slice(0, n_val), slice(n_val, n_val + n_test)
    log_scale = jnp.log(y_scale)
    # The noise refitted on the validation part: calibrated intervals (bayeslayers_jax.fit_noise_var).
    val_noise = fit_noise_var(y[val], mean[val], epistemic[val])  # (D,)
    cal_var = epistemic + jnp.broadcast_to(val_noise, epistemic.shape)
    t, m = y[test], mean[test]
    return {
        "val_nll": regression_nll(y[val], mean[val], epistemic[val] + noise[val]) + log_scale,
        "nll": regression_nll(t, m, epistemic[test] + noise[test]) + log_scale,
        "mixture_nll": mixture_regression_nll(t, means[:, test], epistemic_c[:, test] + noise_c[:, test])
        + log_scale,
        "rmse": rmse(t, m) * y_scale,
        "coverage": interval_coverage(t, m, epistemic[test] + noise[test], level=0.95),
        "noise_std": jnp.sqrt(jnp.mean(noise)) * y_scale,
        "nll_cal": regression_nll(t, m, cal_var[test]) + log_scale,
        "coverage_cal": interval_coverage(t, m, cal_var[test], level=0.95),
        "noise_std_cal": jnp.sqrt(jnp.mean(val_noise)) * y_scale,
        "epistemic_std": jnp.sqrt(jnp.mean(epistemic[test])) * y_scale,
    }


def _classification_metrics(pred, y, n_val, n_test, n_ood):
    probs, samples = pred
    val, test = slice(0, n_val), slice(n_val, n_val + n_test)
    out = {
        "val_nll": categorical_nll(probs[val], y[val]),
        "nll": categorical_nll(probs[test], y[test]),
        "accuracy": accuracy(probs[test], y[test]),
        "ece": expected_calibration_error(probs[test], y[test]),
    }
    if samples is not None:  # the Monte Carlo predictive (for CLT: its logit samples)
        mc_probs = jnp.mean(samples[:, test], axis=0)
        out["nll_mc"] = mixture_categorical_nll(samples[:, test], y[test])
        out["ece_mc"] = expected_calibration_error(mc_probs, y[test])
    if n_ood:
        scored = slice(n_val, n_val + n_test + n_ood)
        is_ood = jnp.arange(n_test + n_ood) >= n_test
        out["auroc_entropy"] = auroc(predictive_entropy(probs[scored]), is_ood)
        if samples is not None:
            out["auroc_mi"] = auroc(mutual_information(samples[:, scored]), is_ood)
    return out


def make_evaluate(method: Method, task: Task, data: dict[str, Any]) -> Callable:
    """``evaluate(params, x_eval, y_eval, y_scale, key) -> {metric: (S,)}``, all splits at once."""
    n_val, n_test, n_ood = data["n_val"], data["n_test"], data["n_ood"]

    def evaluate_one(params, x, y, y_scale, key):
        pred = method.predict(params, x, key)
        if task.kind == "regression":
            return _regression_metrics(pred, y, y_scale, n_val, n_test)
        return _classification_metrics(pred, y, n_val, n_test, n_ood)

    return jax.jit(jax.vmap(evaluate_one))


# --------------------------------------------------------------------------------------------
# The run


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _run_method(name: str, task: Task, data: dict[str, Any], cfg: UQConfig, log) -> dict[str, Any]:
    method = build_method(name, task, data, cfg.num_samples)
    num_splits, num_train = data["x_train"].shape[:2]
    optimizer = optax.adam(cfg.learning_rate)
    keys = jax.random.split(jax.random.key(cfg.seed), num_splits)
    init_keys, train_keys, eval_keys = (jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
                                        for i in range(3))
    x_train, y_train = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
    x_eval, y_eval = jnp.asarray(data["x_eval"]), jnp.asarray(data["y_eval"])
    y_scale = jnp.asarray(data["y_scale"])
    params = jax.vmap(method.init, in_axes=(0, None))(init_keys, x_train[0, :2])
    state = (params, jax.vmap(optimizer.init)(params), train_keys)

    train, train_compile_s = compile_jitted(make_train(method, num_train, task.batch_size, optimizer),
                                            state, x_train, y_train, jnp.int32(1))
    evaluate, eval_compile_s = compile_jitted(make_evaluate(method, task, data),
                                              params, x_eval, y_eval, y_scale, eval_keys)
    log(f"{task.name}/{name}: compiled in {train_compile_s:.1f} s (train) + {eval_compile_s:.1f} s (eval)")
    record: dict[str, Any] = {"checkpoints": [], "train_s": [], "train_loss": [], "metrics": {},
                              "compile_s": {"train": train_compile_s, "eval": eval_compile_s}}
    done, elapsed = 0, 0.0
    for epochs in task.checkpoints:
        start = time.perf_counter()
        state, last_loss = train(state, x_train, y_train, jnp.int32(epochs - done))
        jax.block_until_ready(state)
        elapsed += time.perf_counter() - start
        done = epochs
        metrics = jax.device_get(evaluate(state[0], x_eval, y_eval, y_scale, eval_keys))
        record["checkpoints"].append(epochs)
        record["train_s"].append(elapsed)
        record["train_loss"].append([float(v) for v in np.asarray(last_loss)])
        for key, values in metrics.items():
            record["metrics"].setdefault(key, []).append([float(v) for v in np.asarray(values)])
        val_nll, _ = _mean_se(metrics["val_nll"])
        test_nll, test_se = _mean_se(metrics["nll"])
        log(f"{task.name}/{name}: epoch {epochs:4d}  train loss {float(np.mean(last_loss)):8.4f}  "
            f"val NLL {val_nll:8.4f}  test NLL {test_nll:8.4f} +- {test_se:.4f}  ({elapsed:.1f} s)")
    return record


def select_budget(record: dict[str, Any], grid: tuple[int, ...]) -> int:
    """The grid epoch with the lowest validation NLL averaged over splits (the earliest on ties).

    A NaN mean (a diverged split) never wins.
    """
    best, best_value = grid[0], math.inf
    for epochs in grid:
        index = record["checkpoints"].index(epochs)
        value = float(np.mean(record["metrics"]["val_nll"][index]))
        if value < best_value:
            best, best_value = epochs, value
    return best


def summarize(record: dict[str, Any], epochs: int) -> dict[str, Any]:
    """Mean and standard error over splits of every metric at the checkpoint ``epochs``."""
    index = record["checkpoints"].index(epochs)
    out = {"epochs": epochs, "train_s": record["train_s"][index]}
    for key, values in record["metrics"].items():
        mean, se = _mean_se(values[index])
        out[key] = {"mean": mean, "se": se}
    return out


def _device_info() -> dict[str, Any]:
    import flax
    import sklearn

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "cpu_count": os.cpu_count(),
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                     "numpy": np.__version__, "sklearn": sklearn.__version__},
    }


def run_benchmark(cfg: UQConfig, *, stream: Any = sys.stderr) -> dict[str, Any]:
    """Runs every task and method of ``cfg``; returns the results (see the module docstring)."""
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[uq {time.perf_counter() - start:7.1f}s] {text}", file=stream, flush=True)

    info = _device_info()
    log(f"device: {info['platform']} ({info['device_kind']}), versions: {info['versions']}")
    results: dict[str, Any] = {
        "meta": {"started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "device": info,
        "config": dataclasses.asdict(cfg),
        "tasks": {},
    }
    for task_name in cfg.tasks:
        task = cfg.task(task_name)
        data = load_task(task, cfg.seed)
        log(f"{task.name}: {task.num_splits} splits, {data['x_train'].shape[1]} train / "
            f"{data['n_val']} val / {data['n_test']} test" + (f" / {data['n_ood']} OOD" if data["n_ood"] else "")
            + f" examples, {data['x_train'].shape[2]} features, hidden {task.hidden}")
        entry: dict[str, Any] = {"task": dataclasses.asdict(task), "sizes": {
            "train": int(data["x_train"].shape[1]), "val": data["n_val"], "test": data["n_test"],
            "ood": data["n_ood"]}, "methods": {}}
        for name in cfg.methods:
            if task.kind == "regression" and name in CLASSIFICATION_ONLY:
                continue
            record = _run_method(name, task, data, cfg, log)
            selected = select_budget(record, task.grid)
            record["selected"] = summarize(record, selected)
            record["long"] = summarize(record, task.long_epochs)
            log(f"{task.name}/{name}: selected budget {selected} epochs (validation NLL)")
            entry["methods"][name] = record
        results["tasks"][task_name] = entry
    results["meta"]["wall_s"] = time.perf_counter() - start
    results["clt_target"] = clt_target(results)
    return results


def clt_target(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's CLT classification target, checked per classification task and budget.

    Met when CLT's mean test NLL and ECE are each at most LR's mean plus LR's standard error
    (within one standard error, or better), and, where OOD is measured, CLT's entropy AUROC is
    at least LR's minus LR's standard error. The paired differences CLT - LR (mean +-
    standard error over the same splits) are reported beside it.
    """
    rows = []
    for task_name, entry in results["tasks"].items():
        methods = entry["methods"]
        if entry["task"]["kind"] != "classification" or not {"clt", "lr"} <= set(methods):
            continue
        for budget in ("selected", "long"):
            clt, lr = methods["clt"], methods["lr"]
            row: dict[str, Any] = {"task": task_name, "budget": budget, "checks": {}}
            for metric, better in (("nll", "lower"), ("ece", "lower"), ("auroc_entropy", "higher")):
                if metric not in lr[budget]:
                    continue
                c, l_ = clt[budget][metric], lr[budget][metric]
                ci = clt["checkpoints"].index(clt[budget]["epochs"])
                li = lr["checkpoints"].index(lr[budget]["epochs"])
                diff = np.asarray(clt["metrics"][metric][ci]) - np.asarray(lr["metrics"][metric][li])
                d_mean, d_se = _mean_se(diff)
                if better == "lower":
                    met = c["mean"] <= l_["mean"] + l_["se"]
                else:
                    met = c["mean"] >= l_["mean"] - l_["se"]
                row["checks"][metric] = {"clt": c, "lr": l_, "diff": {"mean": d_mean, "se": d_se},
                                         "met": bool(met)}
            row["met"] = all(check["met"] for check in row["checks"].values())
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Report


def _pm(stat: dict[str, float] | None, digits: int = 3) -> str:
    if stat is None:
        return "-"
    if math.isnan(stat["se"]):
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['se']:.{digits}f}"


_COLUMNS = {
    "regression": [("NLL", "nll", 3), ("mixture NLL", "mixture_nll", 3), ("RMSE", "rmse", 1),
                   ("95% coverage", "coverage", 3), ("noise std", "noise_std", 1),
                   ("NLL, val noise", "nll_cal", 3), ("coverage, val noise", "coverage_cal", 3),
                   ("val noise std", "noise_std_cal", 1)],
    "classification": [("NLL", "nll", 3), ("accuracy", "accuracy", 3), ("ECE", "ece", 3)],
    "ood": [("AUROC entropy", "auroc_entropy", 3), ("AUROC MI", "auroc_mi", 3)],
}


def _task_table(entry: dict[str, Any], budget: str) -> list[str]:
    kind = entry["task"]["kind"]
    columns = list(_COLUMNS[kind]) + (list(_COLUMNS["ood"]) if entry["task"]["ood"] else [])
    header = ["method", "epochs"] + [c[0] for c in columns] + ["train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, record in entry["methods"].items():
        s = record[budget]
        cells = [LABELS[name], str(s["epochs"])]
        cells += [_pm(s.get(key), digits) for _, key, digits in columns]
        cells.append(f"{s['train_s']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_report(results: dict[str, Any]) -> str:
    """The results as Markdown: one table per task and budget, then the CLT target."""
    cfg = results["config"]
    lines = [f"# Real-data uncertainty benchmark ({results['meta']['started_utc'][:10]})", "",
             f"Device: {results['device']['platform']} ({results['device']['device_kind']}, "
             f"{results['device']['cpu_count']} CPUs), versions {results['device']['versions']}; "
             f"Adam lr {cfg['learning_rate']}, {cfg['num_samples']} predictive samples; "
             f"wall time {results['meta']['wall_s']:.0f} s."
             + (" QUICK RUN: the numbers are not measurements." if cfg["quick"] else ""), ""]
    if results["meta"].get("note"):
        lines += [f"Note: {results['meta']['note']}", ""]
    lines += ["Mean ± standard error over splits. Regression metrics in the target's original "
              "units. Train s: all splits together (vmapped), compilation excluded.", ""]
    for task_name, entry in results["tasks"].items():
        t, sizes = entry["task"], entry["sizes"]
        for budget, title in (("selected", "budget chosen on validation NLL"),
                              ("long", f"long budget, {t['long_epochs']} epochs")):
            lines += [f"## {task_name}: {title}", "",
                      f"{t['num_splits']} splits; {sizes['train']} train / {sizes['val']} val / "
                      f"{sizes['test']} test" + (f" / {sizes['ood']} OOD" if sizes["ood"] else "")
                      + f"; hidden {tuple(t['hidden'])}; batch {t['batch_size']}; grid {tuple(t['grid'])}.", ""]
            lines += _task_table(entry, budget) + [""]
    if results.get("clt_target"):
        lines += ["## CLT classification target", "",
                  "Met when CLT's NLL and ECE are at most LR's mean + LR's standard error and its "
                  "entropy AUROC at least LR's mean - standard error. Paired differences CLT - LR "
                  "over the same splits.", "",
                  "| task | budget | NLL CLT - LR | ECE CLT - LR | AUROC CLT - LR | met |",
                  "|---|---|---|---|---|---|"]
        for row in results["clt_target"]:
            cells = [row["task"], row["budget"]]
            for metric in ("nll", "ece", "auroc_entropy"):
                check = row["checks"].get(metric)
                cells.append("-" if check is None else
                             f"{_pm(check['diff'])} ({'ok' if check['met'] else 'no'})")
            cells.append("yes" if row["met"] else "no")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(results: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Writes ``uq_<device>_<date>[_quick].json`` and ``.md`` into ``out_dir``."""
    from benchmarks.suite import device_slug

    os.makedirs(out_dir, exist_ok=True)
    stem = f"uq_{device_slug(results['device'])}_{results['meta']['started_utc'][:10]}"
    stem = os.path.join(out_dir, stem + ("_quick" if results["config"]["quick"] else ""))
    with open(stem + ".json", "w", encoding="utf-8") as fh:
        json.dump(_json_safe(results), fh, indent=1, allow_nan=False)
        fh.write("\n")
    with open(stem + ".md", "w", encoding="utf-8") as fh:
        fh.write(markdown_report(results) + "\n")
    return stem + ".json", stem + ".md"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses ``python -m benchmarks uq`` arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks uq",
        description="Real-data uncertainty benchmark: MAP, BBB, LR, CLT, a deep ensemble and "
        "MC dropout on diabetes, breast cancer and digits (0-4 vs 5-9 OOD).")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (2 splits, 2/4/6 epochs, 8 samples): the numbers are not "
                        f"measurements; written to {QUICK_OUT} unless --out is given")
    parser.add_argument("--tasks", type=_csv, default=None,
                        help=f"comma-separated tasks out of {','.join(TASKS)} (default: all)")
    parser.add_argument("--methods", type=_csv, default=None,
                        help=f"comma-separated methods out of {','.join(METHODS)} (default: all)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="predictive samples (default: 100; 8 for --quick)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    parser.add_argument("--out", default=None,
                        help=f"output directory (default: {_DEFAULT_OUT}; {QUICK_OUT} for --quick)")
    parser.add_argument("--note", default=None, help="a note written into the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and writes the results; returns the exit status."""
    args = parse_args(argv)
    settings: dict[str, Any] = {"quick": args.quick, "seed": args.seed}
    if args.quick:
        settings["num_samples"] = 8
    for key, value in (("tasks", args.tasks), ("methods", args.methods),
                       ("learning_rate", args.lr), ("num_samples", args.num_samples)):
        if value is not None:
            settings[key] = value
    try:
        cfg = UQConfig(**settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = run_benchmark(cfg)
    results["meta"]["note"] = args.note
    print(markdown_report(results))
    json_path, md_path = write_results(results, args.out or (QUICK_OUT if args.quick else _DEFAULT_OUT))
    print(f"\nwrote {json_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
