"""The networks under test and their pure forward, loss, train-step, Monte Carlo and
ensemble functions.

Every method is wrapped in a :class:`Network` with the same two pure functions, so the suite
times all methods through identical code:

* ``forward(variables, x, key)``: one predictive pass. Dense and MAP ignore ``key``; BBB and
  LR draw their noise from it (``rngs={'sample': key}``); CLT and CLTDet return
  ``(mean, var)`` and need no key.
* ``loss(params, rest, x, y, key)``: the training objective a user writes with this package:
  :func:`bayeslayers_jax.elbo_loss` with a Gaussian likelihood of noise variance
  :data:`NOISE_VAR` and ``num_train_examples = batch`` (mean NLL + KL / B; the expected NLL
  for the CLT moment outputs; MAP mode adds the negative log prior instead of the KL), and
  :func:`bayeslayers_jax.gaussian_nll` for the Dense baseline. The PyTorch comparison
  (:mod:`benchmarks.torch_compare`) computes the same loss.

The baseline ``dense`` is a plain ``flax.linen.Dense`` + ReLU network of the same widths (for a
convolutional shape, :class:`ConvNet`: ``flax.linen.Conv`` layers, or the package's
convolutions of the method's type).
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

import bayeslayers_jax as bl
from bayeslayers_jax import BayesianMLP
from bayeslayers_jax import elbo_loss, gaussian_nll

from benchmarks.flops import METHODS, Shape

__all__ = [
    "NOISE_VAR",
    "DenseMLP",
    "ConvNet",
    "Network",
    "build_network",
    "make_mc_forward",
    "make_train_step",
]

#: Observation-noise variance of the Gaussian likelihood in every benchmark loss.
NOISE_VAR = 1.0

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


class ConvNet(nn.Module):
    """A convolutional benchmark network (see :class:`benchmarks.flops.Shape`).

    ``'SAME'`` convolutions with ReLU (CLT: moment propagation), global average pooling,
    a dense output layer.

    Attributes:
      features: channels of every convolution, then the output width.
      kernel_size: kernel size per spatial axis.
      layer_type: ``None`` for ``flax.linen.Conv`` / ``Dense``; else ``'bbb'``, ``'lr'``,
        ``'clt'`` or ``'cltdet'``: the package's conv and dense layers of that type.
    """

    features: Sequence[int]
    kernel_size: tuple[int, ...]
    layer_type: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, map: bool | None = None) -> Any:
        *convs, out = self.features
        window = x.shape[1:-1]
        if self.layer_type is None:
            for width in convs:
                x = nn.relu(nn.Conv(width, self.kernel_size)(x))
            x, _ = bl.flatten_moments(*bl.avg_pool_moments(x, None, window))
            return nn.Dense(out)(x)
        if self.layer_type in ("clt", "cltdet"):
            conv, dense = (bl.CLTConv, bl.CLTLinear) if self.layer_type == "clt" else (bl.CLTConvDet, bl.CLTLinearDet)
            mean, var = x, None
            for index, width in enumerate(convs):
                mean, var = conv(width, kernel_size=self.kernel_size, is_input=index == 0, map=map)(mean, var)
            mean, var = bl.flatten_moments(*bl.avg_pool_moments(mean, var, window))
            return dense(out, is_output=True, map=map)(mean, var)
        conv, dense = {"bbb": (bl.BBBConv, bl.BBBLinear), "lr": (bl.LRConv, bl.LRLinear)}[self.layer_type]
        for width in convs:
            x = nn.relu(conv(width, kernel_size=self.kernel_size, map=map)(x))
        x, _ = bl.flatten_moments(*bl.avg_pool_moments(x, None, window))
        return dense(out, map=map)(x)


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


def build_network(
    method: str,
    shape: Shape,
    key: jax.Array,
    *,
    kl_weight: float | None = None,
    ensemble_size: int | None = None,
) -> Network:
    """Builds and initializes the network of ``method`` at ``shape`` (or an ensemble of it).

    Args:
      method: one of :data:`benchmarks.flops.METHODS`.
      shape: the benchmark shape.
      key: PRNG key for the initialization.
      kl_weight: the ``num_train_examples`` of the ELBO is ``1 / kl_weight``; defaults to
        the batch size (KL / B).
      ensemble_size: ``None`` for one network; else the network is wrapped in
        ``bayeslayers_jax.Ensemble(module, ensemble_size)``: the variables and outputs carry
        a leading member axis, members draw independent noise, and the loss is the sum over
        members of each member's loss (the ensemble-aware ``elbo_loss``).

    Returns:
      A :class:`Network`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    num_train = shape.batch if kl_weight is None else 1.0 / kl_weight
    example = jnp.zeros(shape.input_shape, jnp.float32)
    if shape.spatial:
        member: nn.Module = ConvNet(
            features=tuple(shape.features), kernel_size=(shape.kernel_size,) * len(shape.spatial),
            layer_type=None if method == "dense" else _LAYER_TYPE[method],
        )
    elif method == "dense":
        member = DenseMLP(features=tuple(shape.features))
    else:
        member = BayesianMLP(
            features=tuple(shape.features), layer_type=_LAYER_TYPE[method], act="relu"
        )
    module = member
    if ensemble_size is not None:
        from bayeslayers_jax import Ensemble  # the ensembles feature; imported when used

        module = Ensemble(member, ensemble_size)

    if method == "dense":

        def init(k: jax.Array) -> dict[str, Any]:
            return dict(module.init(k, example))

        def forward(variables: Any, x: jax.Array, k: jax.Array) -> Any:
            del k
            return module.apply(variables, x)

        def member_nll(out: jax.Array, y: jax.Array) -> jax.Array:
            return jnp.mean(gaussian_nll(y, out, NOISE_VAR))

        def loss(params: Any, rest: Any, x: jax.Array, y: jax.Array, k: jax.Array) -> jax.Array:
            out = forward({"params": params, **rest}, x, k)
            if ensemble_size is None:
                return member_nll(out, y)
            return jnp.sum(jax.vmap(member_nll, in_axes=(0, None))(out, y))

    else:
        sampling = method in ("bbb", "lr")
        call_kwargs: dict[str, Any] = {"map": True} if method == "map" else {}

        def init(k: jax.Array) -> dict[str, Any]:
            k_params, k_sample = jax.random.split(k)
            variables = module.init({"params": k_params, "sample": k_sample}, example)
            return {name: value for name, value in variables.items() if name != "kl"}

        def forward(variables: Any, x: jax.Array, k: jax.Array) -> Any:
            rngs = {"sample": k} if sampling else None
            return module.apply(variables, x, rngs=rngs, **call_kwargs)

        def loss(params: Any, rest: Any, x: jax.Array, y: jax.Array, k: jax.Array) -> jax.Array:
            value, _ = elbo_loss(
                module, {"params": params, **rest}, x, y, num_train_examples=num_train,
                key=k if sampling else None, likelihood="gaussian", noise_var=NOISE_VAR,
                map=method == "map",
            )
            return value

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
