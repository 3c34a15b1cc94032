"""``BayesianMLP`` for NNX: the rules of :class:`~bayeslayers_jax._mlp_core.MLPSpec`, NNX layers.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from flax import nnx

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._mlp_core import CLT_TYPES, MLPSpec, mlp_forward
from bayeslayers_jax.nnx._linear import LAYER_TYPES, BayesianLinear, MapFlag, first_not_none, stream_key

__all__ = ["BayesianMLP"]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


class BayesianMLP(MapFlag):
    """A multi-layer perceptron of Bayesian linear layers (NNX twin of :class:`bayeslayers_jax.BayesianMLP`).

    The fields, their checks, the per-layer arguments (CReLU width doubling, the CLT
    ``is_input``/``is_output`` flags) and the forward pass are the linen model's, from the
    shared :class:`~bayeslayers_jax._mlp_core.MLPSpec` and
    :func:`~bayeslayers_jax._mlp_core.mlp_forward`; the layers are the attributes ``layers_0,
    layers_1, ...`` (the linen variable paths; :attr:`layers` lists them).

    Args:
        in_features: the input width (NNX modules are built eagerly).
        features: hidden widths followed by the output width.
        rngs: ``nnx.Rngs`` (``'params'``; a ``'sample'`` stream gives every layer a stream).
        **fields: every other field of the linen :class:`bayeslayers_jax.BayesianMLP`, with
            its default and its checks (``layer_type='lr'``, ``act='relu'``, ``use_bias``,
            ``prior_mean``, ``prior_std``, ``bias_prior_mean``, ``bias_prior_std``,
            ``use_softplus``, ``map``, ``rng_collection``, ``dtype``, ``param_dtype``, and any
            field the linen model gains): they are given to the
            :class:`~bayeslayers_jax._mlp_core.MLPSpec` both front ends build from, so the
            twins cannot drift apart.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BayesianMLP, total_kl
        >>> model = BayesianMLP(2, (8, 1), layer_type="clt", act="crelu", rngs=nnx.Rngs(0))
        >>> model.layers_1.weight_mu.shape  # CReLU doubled the width
        (16, 1)
        >>> mean, var = model(jnp.ones((5, 2)))
        >>> mean.shape, bool(jnp.all(var > 0)), bool(total_kl(model) > 0)
        ((5, 1), True, True)
    """

    def __init__(self, in_features: int, features: Sequence[int], *, rngs: nnx.Rngs, **fields: Any) -> None:
        core.check_features(in_features, "in_features")
        # The front-end-neutral spec checks the fields and derives each layer's arguments.
        config = MLPSpec(features, **fields)
        self.layer_type = config.layer_type
        self.act = config.act
        self.map = config.map
        self.num_layers = len(config.features)
        width = int(in_features)
        for i in range(self.num_layers):
            kwargs = config.layer_kwargs(i)
            out = kwargs.pop("features")
            setattr(self, f"layers_{i}", LAYER_TYPES[self.layer_type](width, out, rngs=rngs, **kwargs))
            width = out * (2 if self.act == "crelu" else 1)

    @property
    def layers(self) -> tuple[BayesianLinear, ...]:
        """The layers, input layer first."""
        return tuple(getattr(self, f"layers_{i}") for i in range(self.num_layers))

    @property
    def is_clt(self) -> bool:
        """Whether the layers propagate ``(mean, var)`` (``'clt'`` or ``'cltdet'``)."""
        return self.layer_type in CLT_TYPES

    def __call__(
        self,
        x: Array,
        var: Array | None = None,
        *,
        map: bool | None = None,
        rng: Array | None = None,
        rngs: Any = None,
    ) -> Array | tuple[Array, Array | None]:
        """Applies the network (as :meth:`bayeslayers_jax.BayesianMLP.__call__`).

        Args:
            x: inputs (input means for CLT types).
            var: input variance for CLT types (``None``: deterministic input).
            map: MAP mode for every layer (wins over the attributes; ``None``: the model's
                ``map`` if set, else each layer's own).
            rng: PRNG key, split into one key per layer as in linen (bit-identical noise).
            rngs: ``nnx.Rngs``/``nnx.RngStream``: one key is drawn from its ``'sample'``
                stream and used as ``rng``. Without either, each layer uses its own stream.

        Returns:
            ``y`` for ``'bbb'``/``'lr'``; ``(mean, var)`` for ``'clt'``/``'cltdet'``.
        """
        map_ = first_not_none(map, self.map)
        if rng is None and rngs is not None and not self.is_clt and not map_:
            rng = stream_key(rngs, self.layers_0.rng_collection, type(self).__name__)
        return mlp_forward(self.layers, x, var, map=map_, rng=rng, layer_type=self.layer_type, act=self.act)
