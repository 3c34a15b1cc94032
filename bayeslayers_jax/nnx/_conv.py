"""Bayesian convolutions as ``flax.nnx`` modules: the NNX twins of the linen conv layers.

``BBBConv(in_features, out_features, kernel_size, *, strides=1, padding='SAME',
input_dilation=1, kernel_dilation=1, feature_group_count=1, ..., rngs)``, as
:class:`flax.nnx.Conv`; every other argument is the NNX dense layers'
(:class:`~bayeslayers_jax.nnx.BBBLinear`). The parameters are the linen conv layers'
(``weight_mu``, ``weight_rho`` of shape ``(*kernel_size, in_features // feature_group_count,
out_features)``, ``bias_mu``, ``bias_rho``), so :func:`~bayeslayers_jax.nnx.from_linen`
loads a linen conv layer's variables; the forward passes are the shared layer core's with
the convolution's affine map, so the two front ends agree for the same parameters and key.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax.core._linear_map import Padding
from bayeslayers_jax.nnx._linear import BayesianLinear, Prior

__all__ = ["BBBConv", "LRConv", "FlipoutConv", "CLTConv", "CLTConvDet"]

Array = jax.Array


def _kernel_size(kernel_size: Any) -> tuple[int, ...]:
    size = (kernel_size,) if isinstance(kernel_size, int) else kernel_size
    try:
        size = tuple(size)
    except TypeError:
        size = None
    if not size or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in size):
        raise ValueError(
            f"kernel_size must be a positive int or a non-empty sequence of positive ints, got {kernel_size!r}"
        )
    return size


class _BayesianConv(BayesianLinear):
    """Construction of the NNX conv layers over :class:`BayesianLinear`'s calls and views (private)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: Padding = "SAME",
        input_dilation: int | Sequence[int] = 1,
        kernel_dilation: int | Sequence[int] = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        prior_mean: Any = 0.0,
        prior_std: Any = 1.0,
        bias_prior_mean: Any = None,
        bias_prior_std: Any = None,
        use_softplus: bool = False,
        map: bool | None = None,
        rng_collection: str = "sample",
        dtype: Any = None,
        param_dtype: Any = np.float32,
        weight_mu_init: Any = core.default_weight_mu_init,
        weight_rho_init: Any = None,
        bias_mu_init: Any = None,
        bias_rho_init: Any = None,
        act: str | None = None,
        is_input: bool = False,
        is_output: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        size = _kernel_size(kernel_size)
        self._op = core.conv_affine_map(strides, padding, input_dilation, kernel_dilation, feature_group_count)
        core.check_features(in_features, "in_features")
        core.check_features(out_features, "out_features")
        if out_features % feature_group_count:
            raise ValueError(
                f"features ({out_features}) must be divisible by feature_group_count ({feature_group_count})"
            )
        if in_features % feature_group_count:
            raise ValueError(
                f"the input's {in_features} features must be divisible by feature_group_count "
                f"({feature_group_count}) of this {type(self).__name__}"
            )
        core.check_rng_collection(rng_collection)
        core.check_layer_config(
            features=out_features, use_bias=use_bias, prior_mean=prior_mean, prior_std=prior_std,
            bias_prior_mean=bias_prior_mean, bias_prior_std=bias_prior_std, map=map,
            has_std=self._has_std, act=act,
        )
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs (its 'params' stream initializes), got {rngs!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.kernel_size = size
        self.strides, self.padding = strides, padding
        self.input_dilation, self.kernel_dilation = input_dilation, kernel_dilation
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.use_softplus = use_softplus
        self.map = map
        self.rng_collection = rng_collection
        self.dtype = dtype
        self.param_dtype = param_dtype
        if act is not None:
            self.act, self.is_input, self.is_output = act, is_input, is_output
        rho_init = jax.nn.initializers.constant(core.INIT_RHO)
        kernel_shape = size + (self.in_features // feature_group_count, self.out_features)
        fan_in = int(np.prod(kernel_shape[:-1]))
        inits = {
            "weight_mu": (weight_mu_init, kernel_shape),
            "weight_rho": (weight_rho_init or rho_init, kernel_shape),
            "bias_mu": (bias_mu_init or core.torch_bias_init(fan_in), (self.out_features,)),
            "bias_rho": (bias_rho_init or rho_init, (self.out_features,)),
        }
        for name in core.param_names(has_std=self._has_std, use_bias=use_bias):
            init, shape = inits[name]
            setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))
        if self._has_std:
            priors = core.prior_values(
                kernel_shape, self.out_features, param_dtype, use_bias=use_bias,
                prior_mean=prior_mean, prior_std=prior_std,
                bias_prior_mean=bias_prior_mean, bias_prior_std=bias_prior_std,
            )
            for name, value in priors.items():
                setattr(self, name, Prior(value))
        self.rngs = rngs[rng_collection].fork() if rng_collection in rngs else nnx.data(None)


class BBBConv(_BayesianConv):
    """Bayes by Backprop convolution (NNX): one kernel sample per call, shared by the batch.

    .. math::
        K = \\mu_K + \\sigma_K \\odot \\varepsilon_K,\\quad b = \\mu_b + \\sigma_b \\odot
        \\varepsilon_b,\\quad y = x \\star K + b

    The twin of :class:`bayeslayers_jax.BBBConv` (the same draw). Arguments: the
    convolution's, as :class:`flax.nnx.Conv` (module docstring), and
    :class:`~bayeslayers_jax.nnx.BBBLinear`'s.

    References:
        Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx._conv import BBBConv
        >>> layer = BBBConv(3, 4, (3, 3), padding='VALID', rngs=nnx.Rngs(0))
        >>> layer.weight_mu.shape
        (3, 3, 3, 4)
        >>> y = layer(jnp.ones((2, 6, 6, 3)), rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y[0] == y[1]))  # one kernel sample for the batch
        ((2, 4, 4, 4), True)
    """

    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None) -> Array:
        """Applies the layer to ``x`` of shape ``(*batch, *spatial, in_features)``.

        Args:
            x: inputs, channels last.
            map: MAP mode for this call (wins over the attribute).
            rng: PRNG key for this call (used as is, like the linen layer's ``rng``).
            rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to draw this call's key from.

        Returns:
            Outputs of shape ``(*batch, *out_spatial, out_features)``.
        """
        return self._sample_call(core.bbb_forward, x, map, rng, rngs)


class LRConv(_BayesianConv):
    """Local-reparameterization convolution (NNX): samples each output element's Gaussian.

    .. math::
        m = x \\star \\mu_K + \\mu_b,\\quad v = x^2 \\star \\sigma_K^2 + \\sigma_b^2,\\quad
        y = m + \\sqrt v \\odot \\varepsilon

    The twin of :class:`bayeslayers_jax.LRConv`; arguments as :class:`BBBConv`.

    References:
        Kingma, Salimans and Welling, "Variational Dropout and the Local Reparameterization
        Trick", NeurIPS 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx._conv import LRConv
        >>> layer = LRConv(3, 4, 3, padding='VALID', rngs=nnx.Rngs(params=0, sample=1))
        >>> layer(jnp.ones((2, 5, 3))).shape  # kernel_size=3: one spatial axis
        (2, 3, 4)
    """

    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None) -> Array:
        """Applies the layer (arguments as :meth:`BBBConv.__call__`)."""
        return self._sample_call(core.lr_forward, x, map, rng, rngs)


class FlipoutConv(_BayesianConv):
    """Flipout convolution (NNX): one kernel perturbation per call, decorrelated per example.

    .. math::
        y_n = x_n \\star \\mu_K + \\big((x_n \\odot s_n) \\star \\Delta K\\big) \\odot r_n
        + \\mu_b + \\Delta b \\odot r_n

    The twin of :class:`bayeslayers_jax.FlipoutConv`; arguments as :class:`BBBConv`.

    References:
        Wen et al., "Flipout: Efficient Pseudo-Independent Weight Perturbations on
        Mini-Batches", ICLR 2018.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx._conv import FlipoutConv
        >>> layer = FlipoutConv(3, 4, (3, 3), rngs=nnx.Rngs(0))
        >>> y = layer(jnp.ones((2, 6, 6, 3)), rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y[0] == y[1]))  # decorrelated examples
        ((2, 6, 6, 4), False)
    """

    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None) -> Array:
        """Applies the layer (arguments as :meth:`BBBConv.__call__`)."""
        return self._sample_call(core.flipout_forward, x, map, rng, rngs)


class CLTConv(_BayesianConv):
    """Sampling-free convolution (NNX): propagates the mean and variance of each output.

    .. math::
        m = \\mu \\star \\mu_K + \\mu_b,\\qquad
        v = (\\mathrm{var} + \\mu^2) \\star \\sigma_K^2 + \\mathrm{var} \\star \\mu_K^2
        + \\sigma_b^2

    then, unless ``is_output``, ReLU or CReLU moment matching (CReLU doubles the channels).
    The twin of :class:`bayeslayers_jax.CLTConv`; ``var=None``, ``act``, ``is_input``,
    ``is_output`` and MAP mode as for :class:`~bayeslayers_jax.nnx.CLTLinear`.

    References:
        Wu et al., "Deterministic Variational Inference for Robust Bayesian Neural
        Networks", ICLR 2019.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx._conv import CLTConv
        >>> layer = CLTConv(3, 4, (3, 3), act='crelu', rngs=nnx.Rngs(0))
        >>> x = jnp.ones((2, 6, 6, 3))
        >>> mean, var = layer(x, jnp.full(x.shape, 0.1))
        >>> mean.shape, bool(jnp.all(var >= 0))
        ((2, 6, 6, 8), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        act: str = "relu",
        is_input: bool = False,
        is_output: bool = False,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_features, out_features, kernel_size, act=act, is_input=is_input, is_output=is_output,
            rngs=rngs, **kwargs,
        )

    def __call__(
        self, mu: Array, var: Array | None = None, *, map: bool | None = None
    ) -> tuple[Array, Array | None]:
        """Propagates ``(mu, var)`` (as :meth:`~bayeslayers_jax.nnx.CLTLinear.__call__`).

        Returns:
            ``(mean, var)`` of the output; ``(mean, None)`` in MAP mode.
        """
        return self._clt_call(mu, var, map)


class CLTConvDet(CLTConv):
    """:class:`CLTConv` with a deterministic kernel (NNX): parameters ``weight_mu``, ``bias_mu``.

    .. math:: m = \\mu \\star K + b,\\qquad v = \\mathrm{var} \\star K^2

    No std, no prior, no KL (as :class:`~bayeslayers_jax.nnx.CLTLinearDet`).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx._conv import CLTConvDet
        >>> layer = CLTConvDet(3, 4, (3, 3), is_output=True, rngs=nnx.Rngs(0))
        >>> sorted(nnx.to_pure_dict(nnx.state(layer, nnx.Param))), layer(jnp.ones((2, 6, 6, 3)))[1]
        (['bias_mu', 'weight_mu'], None)
    """

    _has_std = False
