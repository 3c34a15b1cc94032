"""Bayesian convolutions as ``flax.linen`` modules: BBB, local reparameterization, Flipout, CLT.

The convolution fields and conventions are those of :class:`flax.linen.Conv`: ``features``,
``kernel_size`` (an int for one spatial axis, or one size per spatial axis), ``strides``,
``padding`` (``'SAME'``, ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'``, an int or
``(low, high)`` pairs), ``input_dilation``, ``kernel_dilation``, ``feature_group_count``;
channels last, any number of spatial axes, any number of leading batch axes. The convolution
fields are keyword-only: ``BBBConv(8, kernel_size=(3, 3))``.

Everything else is the dense layers' (:mod:`bayeslayers_jax.linen`): the same fields
(priors, ``use_softplus``, ``map``, ``rng_collection``, ``dtype``, initializers), the same
parameter names ``weight_mu``, ``weight_rho`` (kernel shape
``(*kernel_size, in_features // feature_group_count, features)``), ``bias_mu``,
``bias_rho``, the ``'prior'`` collection, the KL sown into ``'kl'``, the key rules and the
errors; the layers are thin wrappers over the shared layer core and the pure functions
:func:`~bayeslayers_jax.clt_conv_moments`,
:func:`~bayeslayers_jax.local_reparameterization_conv` and
:func:`~bayeslayers_jax.flipout_conv`. The initial means follow the reference:
kaiming-uniform over the fan-in ``prod(kernel_size) * in_features / feature_group_count``
and a bias uniform in ``±1/sqrt(fan_in)`` (as ``torch.nn.Conv2d``).

A CLT conv net ends with :func:`~bayeslayers_jax.avg_pool_moments` and
:func:`~bayeslayers_jax.flatten_moments` before a dense :class:`CLTLinear` head.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from bayeslayers_jax import CLTConv
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> layer = CLTConv(4, kernel_size=(3, 3), strides=2, is_input=True)
    >>> variables = layer.init(jax.random.key(0), x)
    >>> variables["params"]["weight_mu"].shape
    (3, 3, 1, 4)
    >>> mean, var = layer.apply(variables, x)
    >>> mean.shape, bool(jnp.all(var >= 0))
    ((2, 4, 4, 4), True)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._layer_core import conv_affine_map
from bayeslayers_jax.core._linear_map import Padding
from bayeslayers_jax.linen._linear import BayesianLinearBase

__all__ = ["BBBConv", "LRConv", "FlipoutConv", "CLTConv", "CLTConvDet", "conv_affine_map"]

Array = jax.Array


def _kw(default: Any) -> Any:
    return dataclasses.field(default=default, kw_only=True)


class _BayesianConvBase(BayesianLinearBase):
    """The convolution fields over the dense layers' fields and parameter handling (private)."""

    kernel_size: int | Sequence[int] = dataclasses.field(kw_only=True)
    strides: int | Sequence[int] = _kw(1)
    padding: Padding = _kw("SAME")
    input_dilation: int | Sequence[int] = _kw(1)
    kernel_dilation: int | Sequence[int] = _kw(1)
    feature_group_count: int = _kw(1)

    def __post_init__(self) -> None:
        size = (self.kernel_size,) if isinstance(self.kernel_size, int) else self.kernel_size
        try:
            size = tuple(size)
        except TypeError:
            size = None
        if not size or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in size):
            raise ValueError(
                f"kernel_size must be a positive int or a non-empty sequence of positive ints, "
                f"got {self.kernel_size!r}"
            )
        op = self._op  # validates feature_group_count
        del op
        core.check_features(self.features)
        if self.features % self.feature_group_count:
            raise ValueError(
                f"features ({self.features}) must be divisible by feature_group_count "
                f"({self.feature_group_count})"
            )
        super().__post_init__()

    @property
    def _op(self) -> core.AffineMap:
        return conv_affine_map(
            self.strides, self.padding, self.input_dilation, self.kernel_dilation, self.feature_group_count
        )

    def _kernel_size(self) -> tuple[int, ...]:
        return (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)

    def _kernel_shape(self, in_features: int) -> tuple[int, ...]:
        if in_features % self.feature_group_count:
            raise ValueError(
                f"the input's {in_features} features must be divisible by feature_group_count "
                f"({self.feature_group_count}) of this {type(self).__name__}"
            )
        return self._kernel_size() + (in_features // self.feature_group_count, self.features)

    def _in_features(self, kernel_shape: tuple[int, ...]) -> int:
        return kernel_shape[-2] * self.feature_group_count


class BBBConv(_BayesianConvBase):
    """Bayes by Backprop convolution: one kernel sample per call, shared by the batch.

    .. math::
        K = \\mu_K + \\sigma_K \\odot \\varepsilon_K,\\quad b = \\mu_b + \\sigma_b \\odot
        \\varepsilon_b,\\quad y = x \\star K + b

    Fields: :class:`flax.linen.Conv`'s (keyword-only, see the module docstring) and
    :class:`~bayeslayers_jax.BBBLinear`'s; the kernel and bias are drawn in one call of
    :func:`~bayeslayers_jax.sample_weights` exactly as :class:`BBBLinear` draws
    them (bias stacked under the flattened kernel).

    References:
        Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import BBBConv
        >>> x = jnp.ones((2, 6, 6, 3))
        >>> layer = BBBConv(4, kernel_size=(3, 3), padding='VALID')
        >>> variables = layer.init(jax.random.key(0), x)
        >>> y = layer.apply(variables, x, rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y[0] == y[1]))  # one kernel sample for the batch
        ((2, 4, 4, 4), True)
    """

    @nn.compact
    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None) -> Array:
        """Applies the layer to ``x`` of shape ``(*batch, *spatial, in_features)``.

        Args:
            x: inputs, channels last.
            map: MAP mode for this call (exclusive with the ``map`` field).
            rng: PRNG key for this call; else the ``rng_collection`` stream is used.

        Returns:
            Outputs of shape ``(*batch, *out_spatial, features)``.
        """
        return self._sample_call(core.bbb_forward, x, map, rng)


class LRConv(_BayesianConvBase):
    """Local-reparameterization convolution: samples each output element's Gaussian.

    .. math::
        m = x \\star \\mu_K + \\mu_b,\\quad v = x^2 \\star \\sigma_K^2 + \\sigma_b^2,\\quad
        y = m + \\sqrt v \\odot \\varepsilon

    with one ``eps`` per output element
    (:func:`~bayeslayers_jax.local_reparameterization_conv`). Each output has its
    exact marginal, but the outputs of one example are independent (a kernel sample would
    correlate neighbouring positions). Fields as :class:`BBBConv`.

    References:
        Kingma, Salimans and Welling, "Variational Dropout and the Local Reparameterization
        Trick", NeurIPS 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import LRConv
        >>> x = jnp.ones((2, 5, 5, 3))
        >>> layer = LRConv(4, kernel_size=3, padding='VALID')  # kernel_size=3: one spatial axis
        >>> variables = layer.init(jax.random.key(0), x[:, 0])
        >>> layer.apply(variables, x[:, 0], rngs={'sample': jax.random.key(1)}).shape
        (2, 3, 4)
    """

    @nn.compact
    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None) -> Array:
        """Applies the layer (arguments as :meth:`BBBConv.__call__`)."""
        return self._sample_call(core.lr_forward, x, map, rng)


class FlipoutConv(_BayesianConvBase):
    """Flipout convolution: one kernel perturbation per call, decorrelated per example.

    .. math::
        y_n = x_n \\star \\mu_K + \\big((x_n \\odot s_n) \\star \\Delta K\\big) \\odot r_n
        + \\mu_b + \\Delta b \\odot r_n

    with signs per example and channel (broadcast over space), so each example sees one
    kernel distributed exactly as :class:`BBBConv`'s
    (:func:`~bayeslayers_jax.flipout_conv`). Fields as :class:`BBBConv`.

    References:
        Wen et al., "Flipout: Efficient Pseudo-Independent Weight Perturbations on
        Mini-Batches", ICLR 2018.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import FlipoutConv
        >>> x = jnp.ones((2, 6, 6, 3))
        >>> layer = FlipoutConv(4, kernel_size=(3, 3))
        >>> variables = layer.init(jax.random.key(0), x)
        >>> y = layer.apply(variables, x, rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y[0] == y[1]))  # decorrelated examples
        ((2, 6, 6, 4), False)
    """

    @nn.compact
    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None) -> Array:
        """Applies the layer (arguments as :meth:`BBBConv.__call__`)."""
        return self._sample_call(core.flipout_forward, x, map, rng)


class CLTConv(_BayesianConvBase):
    """Sampling-free convolution: propagates the mean and variance of each output.

    .. math::
        m = \\mu \\star \\mu_K + \\mu_b,\\qquad
        v = (\\mathrm{var} + \\mu^2) \\star \\sigma_K^2 + \\mathrm{var} \\star \\mu_K^2
        + \\sigma_b^2

    (:func:`~bayeslayers_jax.clt_conv_moments`), then, unless ``is_output``, ReLU or
    CReLU moment matching (CReLU doubles the channels). ``var=None``, ``is_input``,
    ``is_output``, ``act`` and MAP mode as for :class:`~bayeslayers_jax.CLTLinear`.
    Fields: :class:`BBBConv`'s plus ``act``, ``is_input``, ``is_output``.

    Like every CLT layer it treats its inputs as independent: exact for the first layer,
    an approximation deeper in the net (neighbouring outputs share a receptive field).

    References:
        Wu et al., "Deterministic Variational Inference for Robust Bayesian Neural
        Networks", ICLR 2019. Haussmann et al., UAI 2019.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import CLTConv
        >>> x = jnp.ones((2, 6, 6, 3))
        >>> layer = CLTConv(4, kernel_size=(3, 3), act='crelu')
        >>> variables = layer.init(jax.random.key(0), x)
        >>> mean, var = layer.apply(variables, x, jnp.full(x.shape, 0.1))
        >>> mean.shape, var.shape
        ((2, 6, 6, 8), (2, 6, 6, 8))
    """

    act: str = "relu"
    is_input: bool = False
    is_output: bool = False

    @nn.compact
    def __call__(
        self, mu: Array, var: Array | None = None, *, map: bool | None = None
    ) -> tuple[Array, Array | None]:
        """Propagates ``(mu, var)`` (as :meth:`~bayeslayers_jax.CLTLinear.__call__`).

        Args:
            mu: input means ``(*batch, *spatial, in_features)``.
            var: input variances of ``mu``'s shape, or ``None`` (input layer or MAP mode).
            map: MAP mode for this call.

        Returns:
            ``(mean, var)`` of the output; ``(mean, None)`` in MAP mode.
        """
        return self._clt_call(mu, var, map)


class CLTConvDet(CLTConv):
    """:class:`CLTConv` with a deterministic kernel: parameters ``weight_mu``, ``bias_mu``.

    .. math:: m = \\mu \\star K + b,\\qquad v = \\mathrm{var} \\star K^2

    then moment matching unless ``is_output``; no std, no prior, no KL (as
    :class:`~bayeslayers_jax.CLTLinearDet`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import CLTConvDet
        >>> x = jnp.ones((2, 6, 6, 3))
        >>> layer = CLTConvDet(4, kernel_size=(3, 3), is_output=True)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> sorted(variables["params"]), layer.apply(variables, x)[1]
        (['bias_mu', 'weight_mu'], None)
    """

    _has_std = False
