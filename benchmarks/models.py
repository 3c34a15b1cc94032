"""The networks under test and their pure forward, loss, train-step, Monte Carlo and
ensemble functions.

Every method is wrapped in a :class:`Network` with the same two pure functions, so the suite
times all methods through identical code:

* ``forward(variables, x, key)``: one predictive pass. Dense and MAP ignore ``key``; BBB and
  LR draw their noise from it (``rngs={'sample': key}``); CLT and CLTDet return
  ``(mean, var)`` and need no key.
* ``loss(params, rest, x, y, key)``: the training objective, the data term plus
  ``kl_weight * KL`` where the KL is the sum of the ``'kl'`` collection the Bayesian layers
  sow during the forward pass. The data term is the squared error for point predictions and
  the expected squared error ``(mean - y)**2 + var`` for the CLT moment outputs.

The baseline ``dense`` is a plain ``flax.linen.Dense`` + ReLU network of the same widths.
MAP is the Bayesian network (BBB parameterization) called with ``map=True``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bayeslayers_jax.layers import total_kl
from bayeslayers_jax.mlp import BayesianMLP

from benchmarks.flops import METHODS, Shape

__all__ = [
    "DenseMLP",
    "Network",
    "build_network",
    "make_ensemble_forward",
    "make_mc_forward",
    "make_train_step",
]

_LAYER_TYPE = {"map": "bbb", "bbb": "bbb", "lr": "lr", "clt": "clt", "cltdet": "cltdet"}


class DenseMLP(nn.Module):
    """Baseline: ``flax.linen.Dense`` layers with ReLU between them (none after the last).

    Attributes:
      features: output width of every layer.
      dtype: computation dtype.
    """

    features: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for index, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype)(x)
            if index < len(self.features) - 1:
                x = nn.relu(x)
        return x


@dataclasses.dataclass(frozen=True)
class Network:
    """A method's module with uniform pure functions (see the module docstring).

    Attributes:
      method: one of :data:`benchmarks.flops.METHODS`.
      module: the ``flax.linen`` module.
      variables: initialized variables (``'params'`` plus non-trainable collections).
      forward: ``(variables, x, key) -> output`` (an array, or ``(mean, var)`` for CLT).
      loss: ``(params, rest, x, y, key) -> scalar``; ``rest`` is ``variables`` without
        ``'params'`` (for example the ``'prior'`` collection).
      init: ``(key) -> variables`` for fresh parameter sets (ensembles).
    """

    method: str
    module: nn.Module
    variables: dict[str, Any]
    forward: Callable[..., Any]
    loss: Callable[..., jax.Array]
    init: Callable[[jax.Array], dict[str, Any]]

    @property
    def params(self) -> Any:
        """The trainable ``'params'`` collection."""
        return self.variables["params"]

    @property
    def rest(self) -> dict[str, Any]:
        """Every collection except ``'params'``."""
        return {k: v for k, v in self.variables.items() if k != "params"}


def _data_loss(out: Any, y: jax.Array) -> jax.Array:
    """Squared error for point outputs, expected squared error for ``(mean, var)``."""
    if isinstance(out, tuple):
        mean, var = out
        err = jnp.mean(jnp.square(mean - y))
        return err if var is None else err + jnp.mean(var)
    return jnp.mean(jnp.square(out - y))


def build_network(
    method: str, shape: Shape, key: jax.Array, *, kl_weight: float | None = None
) -> Network:
    """Builds and initializes the network of ``method`` at ``shape``.

    Args:
      method: one of :data:`benchmarks.flops.METHODS`.
      shape: the benchmark shape.
      key: PRNG key for the initialization.
      kl_weight: weight of the KL term in the loss; defaults to ``1 / batch``.

    Returns:
      A :class:`Network`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    weight = 1.0 / shape.batch if kl_weight is None else kl_weight
    example = jnp.zeros((shape.batch, shape.widths[0]), jnp.float32)

    if method == "dense":
        module = DenseMLP(features=tuple(shape.features))

        def init(k: jax.Array) -> dict[str, Any]:
            return dict(module.init(k, example))

        def forward(variables: Any, x: jax.Array, k: jax.Array) -> Any:
            del k
            return module.apply(variables, x)

        def loss(params: Any, rest: Any, x: jax.Array, y: jax.Array, k: jax.Array) -> jax.Array:
            return _data_loss(forward({"params": params, **rest}, x, k), y)

    else:
        module = BayesianMLP(
            features=tuple(shape.features), layer_type=_LAYER_TYPE[method], act="relu"
        )
        sampling = method in ("bbb", "lr")
        call_kwargs: dict[str, Any] = {"map": True} if method == "map" else {}

        def init(k: jax.Array) -> dict[str, Any]:
            k_params, k_sample = jax.random.split(k)
            variables = module.init({"params": k_params, "sample": k_sample}, example)
            return {name: value for name, value in variables.items() if name != "kl"}

        def apply(variables: Any, x: jax.Array, k: jax.Array, **kwargs: Any) -> Any:
            rngs = {"sample": k} if sampling else None
            return module.apply(variables, x, rngs=rngs, **call_kwargs, **kwargs)

        def forward(variables: Any, x: jax.Array, k: jax.Array) -> Any:
            return apply(variables, x, k)

        def loss(params: Any, rest: Any, x: jax.Array, y: jax.Array, k: jax.Array) -> jax.Array:
            out, state = apply({"params": params, **rest}, x, k, mutable=["kl"])
            kl = total_kl(state.get("kl", {}))
            return _data_loss(out, y) + weight * kl

    return Network(
        method=method,
        module=module,
        variables=jax.jit(init)(key),
        forward=forward,
        loss=loss,
        init=init,
    )


def make_train_step(network: Network, tx: optax.GradientTransformation) -> Callable[..., Any]:
    """Jitted train step ``(state, rest, x, y) -> (state, loss)`` with donated ``state``.

    ``state = (params, opt_state, key)``; the key is split every step so sampling methods
    draw fresh noise, as in training.
    """

    def step(state: Any, rest: Any, x: jax.Array, y: jax.Array) -> Any:
        params, opt_state, key = state
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(network.loss)(params, rest, x, y, sub)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, key), loss

    return jax.jit(step, donate_argnums=(0,))


def make_mc_forward(network: Network) -> Callable[..., Any]:
    """Jitted Monte Carlo predictive ``(variables, x, keys) -> stacked outputs``.

    One forward pass per key, vectorized with ``jax.vmap`` over the keys.
    """

    def mc(variables: Any, x: jax.Array, keys: jax.Array) -> Any:
        return jax.vmap(lambda k: network.forward(variables, x, k))(keys)

    return jax.jit(mc)


def make_ensemble_forward(network: Network) -> Callable[..., Any]:
    """Jitted ensemble forward ``(stacked_variables, x, keys)``, vmapped over members."""
    return jax.jit(jax.vmap(network.forward, in_axes=(0, None, 0)))
