"""``BayesianMLP``: a stack of one kind of Bayesian linear layer with ReLU or CReLU."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from bayeslayers_jax.linen._linear import (
    INIT_RHO,
    BBBLinear,
    CLTLinear,
    CLTLinearDet,
    LRLinear,
)
from bayeslayers_jax._mlp_core import MLPSpec, mlp_forward

Initializer = Any

__all__ = ["BayesianMLP", "LAYER_TYPES"]

Array = jax.Array

#: Layer types accepted by :class:`BayesianMLP`, and the modules they build.
LAYER_TYPES = {"bbb": BBBLinear, "lr": LRLinear, "clt": CLTLinear, "cltdet": CLTLinearDet}


class BayesianMLP(nn.Module):
    """A multi-layer perceptron of Bayesian linear layers.

    ``features`` lists the hidden widths and, last, the output width: ``features=(64, 64,
    1)`` builds three layers named ``layers_0``, ``layers_1``, ``layers_2``. The activation
    follows every layer but the last. With ``act='crelu'`` each hidden activation doubles
    the width, so layer ``k + 1`` has ``2 * features[k]`` inputs (Flax infers it).

    * ``'bbb'`` / ``'lr'``: :class:`~bayeslayers_jax.BBBLinear` /
      :class:`~bayeslayers_jax.LRLinear` layers with ``relu`` or ``crelu`` between
      them; ``__call__(x, *, map=None, rng=None) -> y``.
    * ``'clt'`` / ``'cltdet'``: :class:`~bayeslayers_jax.CLTLinear` /
      :class:`~bayeslayers_jax.CLTLinearDet` layers; the first gets
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
            :class:`~bayeslayers_jax.BBBLinear`).
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
        self.spec  # checks the fields (raises on bad values)
        super().__post_init__()

    @property
    def spec(self) -> MLPSpec:
        """The fields as a front-end-neutral :class:`~bayeslayers_jax._mlp_core.MLPSpec`."""
        return MLPSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MLPSpec)})

    @property
    def is_clt(self) -> bool:
        """Whether the layers propagate ``(mean, var)`` (``'clt'`` or ``'cltdet'``).

        Examples:
            >>> from bayeslayers_jax import BayesianMLP
            >>> BayesianMLP((1,), layer_type="cltdet").is_clt, BayesianMLP((1,)).is_clt
            (True, False)
        """
        return self.spec.is_clt

    def layer_kwargs(self, index: int) -> dict[str, Any]:
        """Constructor arguments of layer ``index`` (``features`` included).

        Examples:
            >>> from bayeslayers_jax import BayesianMLP
            >>> kwargs = BayesianMLP((8, 8, 1), layer_type="clt").layer_kwargs(2)
            >>> kwargs["features"], kwargs["is_input"], kwargs["is_output"]
            (1, False, True)
        """
        return self.spec.layer_kwargs(index)

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
