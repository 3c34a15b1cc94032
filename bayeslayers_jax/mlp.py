"""``BayesianMLP``: a stack of one kind of Bayesian linear layer with ReLU or CReLU."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from bayeslayers_jax.layers import (
    INIT_RHO,
    BBBLinear,
    CLTLinear,
    CLTLinearDet,
    LRLinear,
)
from bayeslayers_jax._layer_core import activation, check_prior_value

Initializer = Any

__all__ = ["BayesianMLP", "LAYER_TYPES", "ACTIVATIONS", "mlp_forward"]

Array = jax.Array

#: Layer types accepted by :class:`BayesianMLP`, and the modules they build.
LAYER_TYPES = {"bbb": BBBLinear, "lr": LRLinear, "clt": CLTLinear, "cltdet": CLTLinearDet}
#: The layer types that propagate ``(mean, var)``.
CLT_TYPES = ("clt", "cltdet")
#: Activations accepted by :class:`BayesianMLP`.
ACTIVATIONS = ("relu", "crelu")


class BayesianMLP(nn.Module):
    """A multi-layer perceptron of Bayesian linear layers.

    ``features`` lists the hidden widths and, last, the output width: ``features=(64, 64,
    1)`` builds three layers named ``layers_0``, ``layers_1``, ``layers_2``. The activation
    follows every layer but the last. With ``act='crelu'`` each hidden activation doubles
    the width, so layer ``k + 1`` has ``2 * features[k]`` inputs (Flax infers it).

    * ``'bbb'`` / ``'lr'``: :class:`~bayeslayers_jax.layers.BBBLinear` /
      :class:`~bayeslayers_jax.layers.LRLinear` layers with ``relu`` or ``crelu`` between
      them; ``__call__(x, *, map=None, rng=None) -> y``.
    * ``'clt'`` / ``'cltdet'``: :class:`~bayeslayers_jax.layers.CLTLinear` /
      :class:`~bayeslayers_jax.layers.CLTLinearDet` layers; the first gets
      ``is_input=True``, the last ``is_output=True``, the others moment-match the activation.
      ``__call__(x, var=None, *, map=None, rng=None) -> (mean, var)``; ``var`` is the
      optional input variance, ``var`` out is ``None`` in MAP mode (and for ``'cltdet'``
      when no input variance is given, since everything is then deterministic).

    ``map`` (field or call) switches every layer to its means. Keys: ``rngs={'sample': key}``
    (each layer draws its own key from the stream) or ``rng=key`` at the call (split into one
    key per layer with ``jax.random.split(rng, len(features))``). CLT types never sample and
    ignore ``rng``.

    Attributes:
        features: hidden widths followed by the output width (at least one entry).
        layer_type: ``'bbb'``, ``'lr'``, ``'clt'`` or ``'cltdet'`` (default ``'lr'`` as in
            ObjectRL).
        act: ``'relu'`` or ``'crelu'``.
        use_bias, use_softplus, rng_collection, dtype, param_dtype: passed to every layer (see
            :class:`~bayeslayers_jax.layers.BBBLinear`).
        prior_mean, prior_std, bias_prior_mean, bias_prior_std: the Gaussian prior, a scalar
            for every layer or a sequence with one scalar per layer (``len(features)``
            entries, first layer first), e.g. ``prior_std=(1.0, 0.1)`` for a tighter output
            layer; the ``bias_*`` default (``None``) is the weight's value of the same layer.
            A weight-shaped prior is not possible here because the layers differ in shape:
            replace the ``'prior'`` subtree instead.
        weight_rho_init, bias_rho_init: initializers of the posterior std parameters
            ``rho`` of every layer (default ``constant(-4.6)``, std ``exp(-4.6) ~ 0.01``);
            for an initial posterior std ``s`` use ``nn.initializers.constant(log(s))``
            (``inv_softplus(s)`` with ``use_softplus=True``). Ignored by ``'cltdet'``.
        map: MAP mode; may instead be given at the call.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import BayesianMLP, total_kl
        >>> x = jnp.ones((5, 2))
        >>> model = BayesianMLP((8, 1), layer_type="clt", act="crelu")
        >>> variables = model.init(jax.random.key(0), x)
        >>> variables["params"]["layers_1"]["weight_mu"].shape  # CReLU doubled the width
        (16, 1)
        >>> (mean, var), state = model.apply(variables, x, mutable=["kl"])
        >>> mean.shape, bool(jnp.all(var > 0)), bool(total_kl(state) > 0)
        ((5, 1), True, True)
        >>> import math, flax.linen as nn  # per-layer prior stds and an initial posterior std of 0.1
        >>> model = BayesianMLP((8, 1), prior_std=(1.0, 0.1),
        ...                     weight_rho_init=nn.initializers.constant(math.log(0.1)))
        >>> v = model.init(jax.random.key(0), x)
        >>> round(float(v["prior"]["layers_1"]["weight_std"]), 4), round(float(jnp.exp(v["params"]["layers_0"]["weight_rho"][0, 0])), 4)
        (0.1, 0.1)
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
        if self.layer_type not in LAYER_TYPES:
            raise ValueError(
                f"layer_type must be one of {tuple(LAYER_TYPES)}, got {self.layer_type!r}"
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
                value = self._per_layer(name, i)
                if value is not None:
                    label = name if not self._is_sequence(name) else f"{name}[{i}]"
                    check_prior_value(name, value, label)
        super().__post_init__()

    def _is_sequence(self, name: str) -> bool:
        value = getattr(self, name)
        return isinstance(value, (list, tuple)) or (np.ndim(value) == 1 and np.size(value) > 1)

    def _per_layer(self, name: str, index: int) -> Any:
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
        """Whether the layers propagate ``(mean, var)`` (``'clt'`` or ``'cltdet'``).

        Examples:
            >>> from bayeslayers_jax import BayesianMLP
            >>> BayesianMLP((1,), layer_type="cltdet").is_clt, BayesianMLP((1,)).is_clt
            (True, False)
        """
        return self.layer_type in CLT_TYPES

    def layer_kwargs(self, index: int) -> dict[str, Any]:
        """Constructor arguments of layer ``index`` (``features`` included).

        Examples:
            >>> from bayeslayers_jax import BayesianMLP
            >>> kwargs = BayesianMLP((8, 8, 1), layer_type="clt").layer_kwargs(2)
            >>> kwargs["features"], kwargs["is_input"], kwargs["is_output"]
            (1, False, True)
        """
        n = len(self.features)
        if not 0 <= index < n:
            raise ValueError(f"index must be in [0, {n}), got {index}")
        kwargs: dict[str, Any] = dict(
            features=int(self.features[index]),
            use_bias=self.use_bias,
            prior_mean=self._per_layer("prior_mean", index),
            prior_std=self._per_layer("prior_std", index),
            bias_prior_mean=self._per_layer("bias_prior_mean", index),
            bias_prior_std=self._per_layer("bias_prior_std", index),
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

    def setup(self) -> None:
        cls = LAYER_TYPES[self.layer_type]
        self.layers = [cls(**self.layer_kwargs(i)) for i in range(len(self.features))]

    def __call__(
        self,
        x: Array,
        var: Array | None = None,
        *,
        map: bool | None = None,
        rng: Array | None = None,
    ) -> Array | tuple[Array, Array | None]:
        """Applies the network.

        Args:
            x: inputs (input means for CLT types), features on the last axis.
            var: input variance for CLT types (``None``: deterministic input); must be
                ``None`` for ``'bbb'`` and ``'lr'``.
            map: MAP mode for this call (exclusive with the ``map`` field).
            rng: PRNG key for this call (``'bbb'``/``'lr'``), split into one key per layer.

        Returns:
            ``y`` for ``'bbb'``/``'lr'``; ``(mean, var)`` for ``'clt'``/``'cltdet'``.
        """
        if self.map is None and map is None:
            map_ = False
        else:
            map_ = bool(nn.merge_param("map", self.map, map))
        return mlp_forward(self.layers, x, var, map=map_, rng=rng, layer_type=self.layer_type, act=self.act)


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
        layer_type: one of :data:`LAYER_TYPES`.
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
