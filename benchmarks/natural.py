"""Train steps written the way a user writes them (the suite's "natural composition" rows).

The suite's main rows time :class:`bayeslayers_jax.BayesianMLP` through
:func:`bayeslayers_jax.elbo_loss` with a donated, ahead-of-time compiled step
(:func:`benchmarks.models.make_train_step`). These rows time what the README shows a user:

* ``natural``: the package's layers (``BBBLinear``, ``LRLinear``, ``CLTLinear``) composed in
  the user's own ``flax.linen`` module (:class:`NaturalMLP`, ``nn.compact``, ``nn.relu``
  between sampling layers), keys from ``rngs={'sample': key}``, the KL collected with
  ``mutable=['kl']`` and :func:`bayeslayers_jax.total_kl`, the loss written by hand from the
  public pure functions (:func:`~bayeslayers_jax.gaussian_nll` /
  :func:`~bayeslayers_jax.expected_gaussian_nll`, :func:`~bayeslayers_jax.neg_elbo`), and an
  ``optax.adam`` step under a plain ``jax.jit`` (no donation; the non-trainable ``'prior'``
  collection closed over). Its Dense twin (``natural/dense``) is the same module with
  ``nn.Dense`` and the same step.
* ``propagate``: a plain ``flax.linen`` Dense + ReLU MLP whose parameters are Gaussian
  (trainable means and ``rho``, ``std = exp(rho)``), trained through
  :func:`bayeslayers_jax.propagate_moments` of its ``apply``: the same objective as
  ``BayesianMLP(layer_type='clt')`` (expected Gaussian NLL + KL / N), compared with the
  suite's CLT row.
* ``bayesianize``: :func:`bayeslayers_jax.bayesianize` of the same plain MLP with
  ``method='lr'``, trained like ``natural``, compared with the suite's LR row.

All losses use the suite's Gaussian likelihood (:data:`benchmarks.models.NOISE_VAR`) and
``num_train_examples = batch``, so every row optimizes the suite's objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import bayeslayers_jax as bl
from bayeslayers_jax.linen._linear import INIT_RHO
from benchmarks.flops import Shape
from benchmarks.models import NOISE_VAR, DenseMLP

__all__ = ["NATURAL_METHODS", "NaturalMLP", "NaturalStep", "build_natural_step", "ROW_BASELINES"]

#: Methods with a natural-composition row (the Dense twin always runs with them).
NATURAL_METHODS = ("bbb", "lr", "clt")

#: Row name -> (suite method it is compared with, name of its Dense-twin row or ``None``).
ROW_BASELINES = {
    "natural/bbb": ("bbb", "natural/dense"),
    "natural/lr": ("lr", "natural/dense"),
    "natural/clt": ("clt", "natural/dense"),
    "propagate/clt": ("clt", "natural/dense"),
    "bayesianize/lr": ("lr", "natural/dense"),
}

_LAYERS = {"bbb": bl.BBBLinear, "lr": bl.LRLinear, "clt": bl.CLTLinear}


class NaturalMLP(nn.Module):
    """A user's MLP: ``nn.Dense`` (``layer=None``) or the package's layers, composed by hand.

    Attributes:
      features: output width of every layer.
      layer: ``None`` (``nn.Dense``), ``'bbb'``, ``'lr'`` or ``'clt'``.
    """

    features: Sequence[int]
    layer: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        n = len(self.features)
        if self.layer == "clt":
            mean, var = x, None
            for i, width in enumerate(self.features):
                mean, var = bl.CLTLinear(width, is_input=i == 0, is_output=i == n - 1)(mean, var)
            return mean, var
        cls = nn.Dense if self.layer is None else _LAYERS[self.layer]
        for i, width in enumerate(self.features):
            x = cls(width)(x)
            if i < n - 1:
                x = nn.relu(x)
        return x


@dataclasses.dataclass
class NaturalStep:
    """A jitted user-style train step with its state.

    Attributes:
      name: row name (``'natural/lr'``, ``'propagate/clt'``, ...).
      step: ``jax.jit``-ed ``(params, opt_state, key, x, y) -> (params, opt_state, key, loss)``.
      state: the current ``(params, opt_state, key)``.
      loss: the (unjitted) loss ``(params, x, y, key) -> scalar``.
    """

    name: str
    step: Callable[..., Any]
    state: tuple[Any, Any, Any]
    loss: Callable[..., jax.Array]


def _user_step(loss: Callable[..., jax.Array], tx: optax.GradientTransformation,
               donate: bool = False) -> Callable[..., Any]:
    """``optax`` step under ``jax.jit`` as a user writes it (no donation unless asked)."""

    def step(params: Any, opt_state: Any, key: jax.Array, x: jax.Array, y: jax.Array) -> Any:
        key, sub = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, x, y, sub)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, value

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def _elbo_of(module: nn.Module, rest: dict[str, Any], num_train: float, *, clt: bool,
             sampling: bool) -> Callable[..., jax.Array]:
    """The hand-written negative ELBO of a module built from the package's layers."""

    def loss(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        out, state = module.apply({"params": params, **rest}, x, mutable=["kl"],
                                  rngs={"sample": key} if sampling else None)
        if clt:
            nll = bl.expected_gaussian_nll(y, out[0], out[1], NOISE_VAR)
        else:
            nll = bl.gaussian_nll(y, out, NOISE_VAR)
        return bl.neg_elbo(nll, bl.total_kl(state), num_train)

    return loss


def _propagate_loss(mlp: nn.Module, num_train: float) -> Callable[..., jax.Array]:
    """Expected NLL + KL / N of a plain MLP with Gaussian parameters, via ``propagate_moments``."""
    propagated = bl.propagate_moments(mlp.apply)

    def loss(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        del key
        std = jax.tree_util.tree_map(jnp.exp, params["rho"])
        var = jax.tree_util.tree_map(jnp.square, std)
        mean, out_var = propagated(({"params": params["mu"]}, x), ({"params": var}, None))
        kl = sum(jnp.sum(bl.kl_normal(m, s, 0.0, 1.0)) for m, s in
                 zip(jax.tree_util.tree_leaves(params["mu"]), jax.tree_util.tree_leaves(std)))
        return bl.neg_elbo(bl.expected_gaussian_nll(y, mean, out_var, NOISE_VAR), kl, num_train)

    return loss


def build_natural_step(name: str, shape: Shape, key: jax.Array, tx: optax.GradientTransformation,
                       *, donate: bool = False) -> NaturalStep:
    """Builds the row ``name`` (``'natural/dense'``, ``'natural/bbb'``, ``'natural/lr'``,
    ``'natural/clt'``, ``'propagate/clt'`` or ``'bayesianize/lr'``) at ``shape``.

    Args:
      name: the row.
      shape: an MLP benchmark shape (``spatial`` empty).
      key: PRNG key for the parameters; the step's own key is folded from it.
      tx: the optimizer.
      donate: donate the parameters and optimizer state (what the suite's own step does);
        ``False`` is what a plain ``jax.jit`` does.

    Returns:
      A :class:`NaturalStep`.
    """
    if shape.spatial:
        raise ValueError(f"natural rows need an MLP shape, got the convolutional {shape.name!r}")
    features = tuple(shape.features)
    example = jnp.zeros(shape.input_shape, jnp.float32)
    k_params, k_sample = jax.random.split(key)
    num_train = float(shape.batch)
    kind, _, method = name.partition("/")
    if name == "natural/dense":
        module = NaturalMLP(features)
        params = module.init(k_params, example)["params"]

        def loss(params: Any, x: jax.Array, y: jax.Array, k: jax.Array) -> jax.Array:
            del k
            return jnp.mean(bl.gaussian_nll(y, module.apply({"params": params}, x), NOISE_VAR))

    elif kind == "natural" and method in NATURAL_METHODS:
        module = NaturalMLP(features, method)
        variables = module.init({"params": k_params, "sample": k_sample}, example)
        params, rest = variables["params"], {"prior": variables["prior"]}
        loss = _elbo_of(module, rest, num_train, clt=method == "clt", sampling=method != "clt")
    elif name == "bayesianize/lr":
        module = bl.bayesianize(DenseMLP(features), "lr")
        variables = module.init({"params": k_params, "sample": k_sample}, example)
        params, rest = variables["params"], {"prior": variables["prior"]}
        loss = _elbo_of(module, rest, num_train, clt=False, sampling=True)
    elif name == "propagate/clt":
        mlp = DenseMLP(features)
        mu = mlp.init(k_params, example)["params"]
        params = {"mu": mu, "rho": jax.tree_util.tree_map(lambda a: jnp.full_like(a, INIT_RHO), mu)}
        loss = _propagate_loss(mlp, num_train)
    else:
        raise ValueError(f"unknown natural row {name!r}; known: natural/dense, "
                         f"{', '.join(ROW_BASELINES)}")
    state = (params, tx.init(params), jax.random.fold_in(key, 1))
    return NaturalStep(name=name, step=_user_step(loss, tx, donate), state=state, loss=loss)
