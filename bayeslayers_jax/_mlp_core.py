"""Private: the rules of a Bayesian MLP that both front ends follow (no Flax module).

:class:`MLPSpec` holds and checks the fields of a :class:`~bayeslayers_jax.BayesianMLP`
(linen) or :class:`bayeslayers_jax.nnx.BayesianMLP` and derives each layer's constructor
arguments (the per-layer priors, the CLT ``is_input``/``is_output`` flags);
:func:`mlp_forward` is the forward pass over built layers of either front end.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from bayeslayers_jax._layer_core import INIT_RHO, activation, check_prior_value

__all__ = ["MLPSpec", "mlp_forward", "LAYER_TYPE_NAMES", "CLT_TYPES", "ACTIVATIONS"]

Array = jax.Array
Initializer = Any

#: Layer types of a Bayesian MLP (each front end maps them to its layer classes).
LAYER_TYPE_NAMES = ("bbb", "lr", "clt", "cltdet")
#: The layer types that propagate ``(mean, var)``.
CLT_TYPES = ("clt", "cltdet")
#: Activations accepted by a Bayesian MLP.
ACTIVATIONS = ("relu", "crelu")


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """The checked fields of a Bayesian MLP and the per-layer arguments they give.

    Fields as :class:`~bayeslayers_jax.BayesianMLP`; construction raises on bad values.

    Examples:
        >>> spec = MLPSpec((8, 8, 1), layer_type="clt")
        >>> kwargs = spec.layer_kwargs(2)
        >>> kwargs["features"], kwargs["is_input"], kwargs["is_output"], spec.is_clt
        (1, False, True, True)
    """

    features: Sequence[int]
    layer_type: str = "lr"
    act: str = "relu"
    use_bias: bool = True
    prior_mean: Any = 0.0
    prior_std: Any = 1.0
    bias_prior_mean: Any = None
    bias_prior_std: Any = None
    use_softplus: bool = False
    map: bool | None = None
    rng_collection: str = "sample"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    weight_rho_init: Initializer = nn.initializers.constant(INIT_RHO)
    bias_rho_init: Initializer = nn.initializers.constant(INIT_RHO)

    def __post_init__(self) -> None:
        if self.layer_type not in LAYER_TYPE_NAMES:
            raise ValueError(
                f"layer_type must be one of {LAYER_TYPE_NAMES}, got {self.layer_type!r}"
            )
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, got {self.act!r}")
        if isinstance(self.features, (int, np.integer)) or not isinstance(self.features, Sequence):
            raise TypeError(
                f"features must be a sequence of positive ints (hidden widths then the output "
                f"width), got {self.features!r}"
            )
        if len(self.features) == 0:
            raise ValueError("features must hold at least one width (the output width), got []")
        for f in self.features:
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f <= 0:
                raise ValueError(f"features must hold positive ints, got {tuple(self.features)!r}")
        for name in ("prior_mean", "prior_std", "bias_prior_mean", "bias_prior_std"):
            for i in range(len(self.features)):
                value = self.per_layer(name, i)
                if value is not None:
                    label = name if not self._is_sequence(name) else f"{name}[{i}]"
                    check_prior_value(name, value, label)

    def _is_sequence(self, name: str) -> bool:
        value = getattr(self, name)
        return isinstance(value, (list, tuple)) or (np.ndim(value) == 1 and np.size(value) > 1)

    def per_layer(self, name: str, index: int) -> Any:
        """Layer ``index``'s value of a prior field (a scalar, or one entry of a sequence)."""
        value = getattr(self, name)
        if value is None:
            return None
        if self._is_sequence(name):
            if len(value) != len(self.features):
                raise ValueError(
                    f"{name} must be a scalar or hold one value per layer ({len(self.features)} "
                    f"for features={tuple(self.features)}), got {len(value)} values: {value!r}"
                )
            value = value[index]
        if np.size(value) != 1:
            raise ValueError(
                f"{name} of a BayesianMLP must be a scalar or a sequence of scalars (one per "
                f"layer; layers differ in shape), got shape {np.shape(value)}: replace the "
                "'prior' subtree of the variables for weight-shaped priors"
            )
        return value

    @property
    def is_clt(self) -> bool:
        """Whether the layers propagate ``(mean, var)`` (``'clt'`` or ``'cltdet'``)."""
        return self.layer_type in CLT_TYPES

    def layer_kwargs(self, index: int) -> dict[str, Any]:
        """Constructor arguments of layer ``index`` (``features`` included)."""
        n = len(self.features)
        if not 0 <= index < n:
            raise ValueError(f"index must be in [0, {n}), got {index}")
        kwargs: dict[str, Any] = dict(
            features=int(self.features[index]),
            use_bias=self.use_bias,
            prior_mean=self.per_layer("prior_mean", index),
            prior_std=self.per_layer("prior_std", index),
            bias_prior_mean=self.per_layer("bias_prior_mean", index),
            bias_prior_std=self.per_layer("bias_prior_std", index),
            use_softplus=self.use_softplus,
            weight_rho_init=self.weight_rho_init,
            bias_rho_init=self.bias_rho_init,
            rng_collection=self.rng_collection,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.is_clt:
            kwargs.update(act=self.act, is_input=index == 0, is_output=index == n - 1)
        return kwargs


def mlp_forward(
    layers: Sequence[Any],
    x: Array,
    var: Array | None = None,
    *,
    map: bool | None,
    rng: Array | None,
    layer_type: str,
    act: str,
) -> Array | tuple[Array, Array | None]:
    """The forward pass of a :class:`BayesianMLP` over its built layers, for any front end.

    CLT types chain ``(mean, var)`` through ``layer(h, v, map=map)``; sampling types call
    ``layer(h, map=map, rng=key)`` with ``act`` between layers, ``rng`` split into one key
    per layer (``jax.random.split(rng, len(layers))``, layer ``i`` gets key ``i``; no keys
    in MAP mode or without ``rng``: each layer then draws from its own stream).

    Args:
        layers: the layers, input layer first (linen submodules or ``flax.nnx`` modules).
        x: inputs (input means for CLT types).
        var: input variance for CLT types; must be ``None`` for ``'bbb'`` and ``'lr'``.
        map: MAP mode, passed to every layer (``None``: each layer's own ``map``).
        rng: PRNG key for this call, or ``None``.
        layer_type: one of :data:`LAYER_TYPE_NAMES`.
        act: one of :data:`ACTIVATIONS`.

    Returns:
        ``y`` for ``'bbb'``/``'lr'``; ``(mean, var)`` for ``'clt'``/``'cltdet'``.

    Raises:
        ValueError: ``var`` given to a sampling layer type.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import BBBLinear
        >>> layers = [BBBLinear(4), BBBLinear(1)]
        >>> x = jnp.ones((2, 3))
        >>> v0 = layers[0].init(jax.random.key(0), x)
        >>> v1 = layers[1].init(jax.random.key(1), jnp.ones((2, 4)))
        >>> bound = [lambda h, **kw: layers[0].apply(v0, h, **kw), lambda h, **kw: layers[1].apply(v1, h, **kw)]
        >>> mlp_forward(bound, x, map=True, rng=None, layer_type="bbb", act="relu").shape
        (2, 1)
    """
    n = len(layers)
    if layer_type in CLT_TYPES:
        h, v = x, var
        for layer in layers:
            h, v = layer(h, v, map=map)
        return h, v
    if var is not None:
        raise ValueError(
            f"var is only accepted by CLT layer types ('clt', 'cltdet'), got var for "
            f"layer_type={layer_type!r}"
        )
    keys = [None] * n if (rng is None or map) else list(jax.random.split(rng, n))
    h = x
    for i, layer in enumerate(layers):
        h = layer(h, map=map, rng=keys[i])
        if i < n - 1:
            h = activation(act, h)
    return h
