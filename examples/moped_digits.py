r"""MOPED on scikit-learn's 8x8 digits: make a trained Flax classifier Bayesian with ``bl.bayesianize``.

Run ``python examples/moped_digits.py --out examples/results/moped_digits.json`` (well under
a minute on two CPU cores; ``--quick`` for a smoke run). Digits 0-4 are the
in-distribution classes (two thirds for training, one third for testing), digits 5-9 are out
of distribution (OOD), as in ``examples/conv_digits.py``.

1. A plain ``flax.linen`` CNN, written as a user would (:class:`DigitsCNN`: conv 3x3 with 8
   channels, ReLU, 2x2 average pool, dense 32, ReLU, dense 5 logits), is trained
   deterministically with Adam on the cross-entropy.
2. ``bl.bayesianize(model, method='lr', pretrained=variables)`` (MOPED, Krishnan et al.
   2020) turns its ``nn.Conv`` and ``nn.Dense`` layers into local-reparameterization layers
   whose posterior means are the trained weights and whose initial stds are
   ``delta * |w|`` (``--delta``, default :data:`bayeslayers_jax.MOPED_DELTA` = 0.1). In MAP
   mode (``map=True``: the means) it is the trained network: its test accuracy equals the
   deterministic one exactly (checked, and the largest logit difference is recorded).
3. A short fine-tune on the negative ELBO per training example
   (:func:`~bayeslayers_jax.make_elbo_loss_fn`, categorical likelihood, prior ``N(0, 1)``
   or, with ``--moped-prior``, centred at the pretrained weights with std ``delta * |w|``)
   trains means and stds together.

Reported for the deterministic network, the MOPED initialization (MAP and sampled) and the
fine-tuned network: test accuracy, NLL and ECE (15 bins) on digits 0-4, and the AUROC of the
predictive entropy for telling digits 5-9 from 0-4; the Bayesian predictive averages the
softmax over ``--samples`` weight draws (:func:`~bayeslayers_jax.predictive_probs`). All
metrics are the package's (:mod:`bayeslayers_jax.metrics`). Results go to ``--out`` as JSON
and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import bayeslayers_jax as bl


class DigitsCNN(nn.Module):
    """A plain Flax classifier for 8x8 digits, as a user would write it (no package layers).

    Attributes:
      num_classes: logits of the head.
    """

    num_classes: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(features=8, kernel_size=(3, 3))(x))
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(features=32)(x))
        return nn.Dense(features=self.num_classes)(x)


def load_data(seed: int) -> dict[str, np.ndarray]:
    """Digits as ``(N, 8, 8, 1)`` in [0, 1]; 0-4 split 2:1 into train/test, 5-9 as OOD."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(np.flatnonzero(y < 5))
    n_train = 2 * len(order) // 3
    train, test = order[:n_train], order[n_train:]
    return dict(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test], x_ood=x[y >= 5])


def _fit(loss_fn, params, data, *, steps: int, batch: int, lr: float, seed: int) -> tuple[Any, float]:
    """Adam on ``loss_fn(params, (x, y), key)`` over random minibatches (:func:`bl.train_step`)."""
    optimizer = optax.adam(lr)
    step = jax.jit(bl.train_step(loss_fn, optimizer))
    opt_state = optimizer.init(params)
    x, y = data["x_train"], data["y_train"]
    rng, key, loss = np.random.default_rng(seed), jax.random.key(seed), jnp.nan
    for _ in range(steps):
        idx = rng.choice(len(x), batch, replace=False)
        key, step_key = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, (x[idx], y[idx]), step_key)
    return params, float(loss)


def train_deterministic(data, *, steps: int, batch: int, lr: float, seed: int) -> tuple[DigitsCNN, dict]:
    """The plain network trained on the mean cross-entropy; returns the model and its variables."""
    model = DigitsCNN()
    variables = model.init(jax.random.key(seed), data["x_train"][:batch])

    def loss_fn(params, batch_, key):
        del key
        x, y = batch_
        return jnp.mean(bl.categorical_nll_from_logits(y, model.apply({"params": params}, x)))

    params, _ = _fit(loss_fn, variables["params"], data, steps=steps, batch=batch, lr=lr, seed=seed)
    return model, {**variables, "params": params}


def scores(probs: jax.Array, probs_ood: jax.Array, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, NLL and ECE on digits 0-4; AUROC of the predictive entropy for 5-9 vs 0-4."""
    labels = jnp.asarray(labels)
    return dict(
        accuracy=float(bl.accuracy(probs, labels)),
        nll=float(bl.categorical_nll(probs, labels)),
        ece=float(bl.expected_calibration_error(probs, labels)),
        ood_auroc=float(bl.entropy_ood_auroc(probs, probs_ood)),
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the example (see the module docstring); returns the results dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--det-steps", type=int, default=1000, help="deterministic training steps")
    parser.add_argument("--steps", type=int, default=500, help="ELBO fine-tuning steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam step size of the deterministic training")
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--delta", type=float, default=bl.MOPED_DELTA, help="MOPED: initial std = delta |w|")
    parser.add_argument("--moped-prior", action="store_true", help="prior centred at the pretrained weights")
    parser.add_argument("--samples", type=int, default=100, help="weight draws of the predictive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 150 + 50 steps, 20 draws")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.det_steps, args.steps, args.samples = 150, 50, 20
    start = time.perf_counter()
    data = load_data(args.seed)
    x_test, x_ood, y_test = data["x_test"], data["x_ood"], data["y_test"]

    model, variables = train_deterministic(data, steps=args.det_steps, batch=args.batch, lr=args.lr,
                                           seed=args.seed)
    det_logits = model.apply(variables, x_test)
    rows = {"deterministic": scores(jax.nn.softmax(det_logits), jax.nn.softmax(model.apply(variables, x_ood)),
                                    y_test)}

    bnn = bl.bayesianize(model, method="lr", pretrained=variables, moped_delta=args.delta,
                         moped_prior=args.moped_prior)
    bvars = bnn.init(jax.random.key(args.seed + 1), x_test[:1])
    map_logits = bnn.apply(bvars, x_test, map=True)
    map_equal = bool(jnp.all(jnp.argmax(map_logits, -1) == jnp.argmax(det_logits, -1)))
    rows["moped_init_map"] = scores(jax.nn.softmax(map_logits), jax.nn.softmax(bnn.apply(bvars, x_ood, map=True)),
                                    y_test)

    def predict(v, seed):
        k_in, k_ood = jax.random.split(jax.random.key(seed))
        probs = bl.predictive_probs(bnn, v, x_test, key=k_in, num_samples=args.samples).probs
        return probs, bl.predictive_probs(bnn, v, x_ood, key=k_ood, num_samples=args.samples).probs

    rows["moped_init_sampled"] = scores(*predict(bvars, args.seed + 2), y_test)
    loss_fn = bl.make_elbo_loss_fn(bnn, bvars, num_train_examples=len(data["x_train"]), likelihood="categorical")
    params, final_loss = _fit(loss_fn, bvars["params"], data, steps=args.steps, batch=args.batch,
                              lr=args.finetune_lr, seed=args.seed + 3)
    tuned = {**bvars, "params": params}
    rows["moped_finetuned"] = scores(*predict(tuned, args.seed + 4), y_test)
    rows["moped_finetuned_map"] = scores(
        jax.nn.softmax(bnn.apply(tuned, x_test, map=True)), jax.nn.softmax(bnn.apply(tuned, x_ood, map=True)), y_test)

    results = {
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {
            "method": "lr", "n_train": len(data["x_train"]), "n_test": len(x_test), "n_ood": len(x_ood),
            "jax": jax.__version__, "device": jax.devices()[0].device_kind},
        "map_predictions_equal": map_equal,
        "map_max_abs_logit_diff": float(jnp.max(jnp.abs(map_logits - det_logits))),
        "finetune_final_loss": final_loss,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    print(markdown_table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


_LABELS = {
    "deterministic": "deterministic CNN",
    "moped_init_map": "bayesianized, MOPED init, MAP",
    "moped_init_sampled": "bayesianized, MOPED init, sampled",
    "moped_finetuned": "bayesianized + ELBO fine-tune, sampled",
    "moped_finetuned_map": "bayesianized + ELBO fine-tune, MAP",
}


def markdown_table(results: dict[str, Any]) -> str:
    """The rows of ``results`` as a markdown table (accuracy, NLL, ECE, OOD AUROC)."""
    lines = ["| model | accuracy (0-4) | NLL | ECE | OOD AUROC (entropy) |", "|---|---:|---:|---:|---:|"]
    for name, r in results["rows"].items():
        lines.append(f"| {_LABELS[name]} | {r['accuracy']:.3f} | {r['nll']:.3f} | {r['ece']:.3f} "
                     f"| {r['ood_auroc']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
