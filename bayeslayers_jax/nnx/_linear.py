"""The dense Bayesian layers of the NNX front end, their prior variables and key streams.

Conventions: see :mod:`bayeslayers_jax.nnx`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
import flax.linen as nn

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._layer_core import INIT_RHO, default_weight_mu_init

__all__ = ["Prior", "BBBLinear", "LRLinear", "FlipoutLinear", "CLTLinear", "CLTLinearDet", "LAYER_TYPES", "BayesianLinear", "MapFlag", "first_not_none", "stream_key"]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


def stream_remedy(rng_collection: str) -> str:
    """How an NNX layer takes a stream key, for :func:`~bayeslayers_jax._layer_core.missing_key_error`."""
    return (
        f"rngs with a '{rng_collection}' stream (nnx.Rngs(params=..., {rng_collection}=...)) "
        "at construction or at the call"
    )


class Prior(nnx.Variable):
    """The Gaussian prior of a layer's parameters: a variable type of its own, never trained.

    Not an ``nnx.Param``, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and ``nnx.grad``
    skip it; ``nnx.state(model, Prior)`` selects every prior of a model.

    Examples:
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BBBLinear, Prior
        >>> layer = BBBLinear(3, 2, prior_std=0.5, rngs=nnx.Rngs(0))
        >>> sorted(nnx.to_pure_dict(nnx.state(layer, Prior)))
        ['bias_mean', 'bias_std', 'weight_mean', 'weight_std']
        >>> print(layer.weight_std[...])
        0.5
    """


def first_not_none(*values: Any) -> Any:
    """The first value that is not ``None`` (``None`` if all are)."""
    return next((v for v in values if v is not None), None)


class MapFlag(nnx.Module):
    """The ``map`` attribute of the layers and the MLP: ``nnx.view(model, map=...)`` sets it."""

    def set_view(self, map: bool | None = None) -> None:
        """Sets ``map`` for ``nnx.view(model, map=...)`` (``None`` leaves it unchanged).

        Examples:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import BBBLinear
            >>> layer = nnx.view(BBBLinear(3, 2, rngs=nnx.Rngs(0)), map=True)
            >>> layer.map, layer(jnp.ones((1, 3))).shape  # MAP: no key needed
            (True, (1, 2))
        """
        if map is not None:
            self.map = map


class BayesianLinear(MapFlag):
    """Construction, parameters, priors and keys shared by the NNX layers (private)."""

    # Layers with deterministic weights (CLTLinearDet) override this.
    _has_std = True
    # The affine map of the layer family.
    _op = core.DENSE

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        prior_mean: Any = 0.0,
        prior_std: Any = 1.0,
        bias_prior_mean: Any = None,
        bias_prior_std: Any = None,
        use_softplus: bool = False,
        map: bool | None = None,
        rng_collection: str = "sample",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        weight_mu_init: Initializer = default_weight_mu_init,
        weight_rho_init: Initializer = nn.initializers.constant(INIT_RHO),
        bias_mu_init: Initializer | None = None,
        bias_rho_init: Initializer = nn.initializers.constant(INIT_RHO),
        act: str | None = None,
        is_input: bool = False,
        is_output: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        core.check_features(in_features, "in_features")
        core.check_features(out_features, "out_features")
        core.check_rng_collection(rng_collection)
        core.check_layer_config(
            features=out_features,
            use_bias=use_bias,
            prior_mean=prior_mean,
            prior_std=prior_std,
            bias_prior_mean=bias_prior_mean,
            bias_prior_std=bias_prior_std,
            map=map,
            has_std=self._has_std,
            act=act,
        )
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs (its 'params' stream initializes), got {rngs!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.use_bias = use_bias
        self.use_softplus = use_softplus
        self.map = map
        self.rng_collection = rng_collection
        self.dtype = dtype
        self.param_dtype = param_dtype
        if act is not None:
            self.act, self.is_input, self.is_output = act, is_input, is_output
        kernel_shape = (self.in_features, self.out_features)
        inits = {
            "weight_mu": (weight_mu_init, kernel_shape),
            "weight_rho": (weight_rho_init, kernel_shape),
            "bias_mu": (bias_mu_init or core.torch_bias_init(self.in_features), (self.out_features,)),
            "bias_rho": (bias_rho_init, (self.out_features,)),
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
        # The layer's own noise stream, only from a stream of that name (never 'default').
        self.rngs = rngs[rng_collection].fork() if rng_collection in rngs else nnx.data(None)

    # ----------------------------------------------------------------- internals
    def _params(self) -> dict[str, Array]:
        return {n: getattr(self, n)[...] for n in core.param_names(has_std=self._has_std, use_bias=self.use_bias)}

    def _priors(self) -> dict[str, Array]:
        names = ["weight_mean", "weight_std"] + (["bias_mean", "bias_std"] if self.use_bias else [])
        return {n: getattr(self, n)[...] for n in names}

    def _map(self, map: bool | None) -> bool:
        """The call's ``map`` over the attribute (NNX's rule, as ``nnx.Dropout``); default False."""
        return bool(first_not_none(map, self.map, False))

    def _key(self, rng: Array | None, rngs: nnx.Rngs | nnx.RngStream | None) -> Array:
        """The sampling key: ``rng``, else one key of ``rngs``, else of the layer's own stream."""
        if rng is not None:
            return rng
        return stream_key(rngs, self.rng_collection, type(self).__name__, own=self.rngs)

    def _input(self, x: Any, input_name: str) -> Array:
        x = core.check_input(x, input_name)
        core.check_input_width(x.shape[-1], self.in_features, input_name, type(self).__name__)
        return x

    def _sample_call(self, forward, x: Any, map: bool | None, rng: Array | None, rngs: Any) -> Array:
        map_ = self._map(map)
        x = self._input(x, "x")
        key = None if map_ else self._key(rng, rngs)
        return core.sample_forward(forward, key, x, self._params(), self.use_softplus, self.dtype, self._op)

    def _clt_call(self, mu: Any, var: Any, map: bool | None) -> tuple[Array, Array | None]:
        map_ = self._map(map)
        mu = self._input(mu, "mu")
        return core.clt_layer_forward(
            mu, var, self._params(), map=map_, is_input=self.is_input, var_optional=False,
            layer_name=type(self).__name__, use_softplus=self.use_softplus, dtype=self.dtype,
            act=self.act, is_output=self.is_output, op=self._op,
        )

    # ------------------------------------------------------------ public views
    def mean(self) -> tuple[Array, Array | None]:
        """Means ``(weight_mu, bias_mu)`` (``bias_mu`` is ``None`` without bias).

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import CLTLinearDet
            >>> w, b = CLTLinearDet(3, 2, use_bias=False, rngs=nnx.Rngs(0)).mean()
            >>> w.shape, b
            ((3, 2), None)
        """
        p = self._params()
        return p["weight_mu"], p.get("bias_mu")

    def std(self) -> tuple[Array, Array | None]:
        """Standard deviations ``exp(rho)`` (``softplus(rho)`` with ``use_softplus``).

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import LRLinear
            >>> w_std, b_std = LRLinear(3, 2, rngs=nnx.Rngs(0)).std()
            >>> print(round(float(w_std[0, 0]), 5))  # exp(-4.6)
            0.01005
        """
        core.require_std(self._has_std, type(self).__name__, "std")
        return core.param_stds(self._params(), self.use_softplus)

    def var(self) -> tuple[Array, Array | None]:
        """Variances, the squares of :meth:`std`.

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import LRLinear
            >>> w_var, b_var = LRLinear(3, 2, rngs=nnx.Rngs(0)).var()
            >>> print(round(float(b_var[0]), 7))  # exp(-9.2)
            0.000101
        """
        core.require_std(self._has_std, type(self).__name__, "var")
        return core.param_vars(self._params(), self.use_softplus)

    def kl(self) -> Array:
        """Closed-form ``KL(q || p)`` summed over all weights and biases.

        .. math::
            \\mathrm{KL} = \\sum \\log\\frac{\\sigma_p}{\\sigma_q}
            + \\frac{\\sigma_q^2 + (\\mu_q - \\mu_p)^2}{2\\sigma_p^2} - \\frac12

        with the prior of the layer's :class:`Prior` variables.

        Examples:
            >>> from flax import nnx
            >>> from bayeslayers_jax.nnx import BBBLinear
            >>> bool(BBBLinear(3, 2, rngs=nnx.Rngs(0)).kl() > 0)
            True
        """
        core.require_std(self._has_std, type(self).__name__, "KL")
        return core.layer_kl(self._params(), self._priors(), self.use_softplus)


class BBBLinear(BayesianLinear):
    """Bayes by Backprop linear layer (NNX): samples the weights once per call.

    .. math::
        W = \\mu_W + \\sigma_W \\odot \\varepsilon_W,\\quad b = \\mu_b + \\sigma_b \\odot
        \\varepsilon_b,\\quad y = x W + b

    The twin of :class:`bayeslayers_jax.BBBLinear` (same fields and defaults, same draw:
    :func:`~bayeslayers_jax._layer_core.bbb_forward`), with an explicit input width.

    Args:
        in_features: the input width.
        out_features: the output width.
        use_bias: as the linen layer's field; so are ``prior_mean``, ``prior_std``,
            ``bias_prior_mean``, ``bias_prior_std``, ``use_softplus``, ``dtype``,
            ``param_dtype``, ``weight_mu_init``, ``weight_rho_init``, ``bias_mu_init`` and
            ``bias_rho_init``.
        map: MAP mode (means only); the ``map=`` call argument wins over it.
        rng_collection: the stream name (``'sample'``) taken from ``rngs``.
        rngs: ``nnx.Rngs``: ``'params'`` (or ``'default'``) initializes; a stream named
            ``rng_collection`` becomes the layer's noise stream (module docstring).

    References:
        Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import BBBLinear
        >>> layer = BBBLinear(3, 2, rngs=nnx.Rngs(params=0, sample=1))
        >>> layer.weight_mu.shape, layer.bias_rho.shape
        ((3, 2), (2,))
        >>> y = layer(jnp.ones((5, 3)))
        >>> bool(jnp.all(y == y[0]))  # one weight sample for the whole batch
        True
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)

    def __call__(
        self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None
    ) -> Array:
        """Applies the layer.

        Args:
            x: inputs, features on the last axis.
            map: MAP mode for this call (wins over the attribute).
            rng: PRNG key for this call (used as is, like the linen layer's ``rng``).
            rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to draw this call's key from.

        Returns:
            Outputs of shape ``x.shape[:-1] + (out_features,)``.
        """
        return self._sample_call(core.bbb_forward, x, map, rng, rngs)


class LRLinear(BayesianLinear):
    """Local-reparameterization linear layer (NNX): samples the pre-activations.

    .. math::
        m = x\\mu_W + \\mu_b,\\quad v = x^2 \\sigma_W^2 + \\sigma_b^2,\\quad
        y = m + \\sqrt v \\odot \\varepsilon

    The twin of :class:`bayeslayers_jax.LRLinear`; arguments as :class:`BBBLinear`.

    References:
        Kingma, Salimans and Welling, "Variational Dropout and the Local Reparameterization
        Trick", NeurIPS 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import LRLinear
        >>> layer = LRLinear(3, 2, rngs=nnx.Rngs(0))  # no 'sample' stream: pass a key
        >>> y = layer(jnp.ones((5, 3)), rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y == y[0]))  # independent noise per example
        ((5, 2), False)
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)

    def __call__(
        self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None
    ) -> Array:
        """Applies the layer (arguments as :meth:`BBBLinear.__call__`)."""
        return self._sample_call(core.lr_forward, x, map, rng, rngs)


class CLTLinear(BayesianLinear):
    """Sampling-free layer (NNX): propagates the mean and variance with the CLT.

    .. math::
        m = \\mu\\,\\mu_W + \\mu_b,\\qquad
        v = (\\mathrm{var} + \\mu^2)\\,\\sigma_W^2 + \\mathrm{var}\\,\\mu_W^2 + \\sigma_b^2

    then, unless ``is_output``, ReLU or CReLU moment matching. The twin of
    :class:`bayeslayers_jax.CLTLinear`: ``var=None`` is allowed for the input layer
    (``is_input=True``) or in MAP mode, which returns ``(mean, None)``.

    Args:
        act: ``'relu'`` or ``'crelu'`` (CReLU doubles the output width).
        is_input: the first layer (its input may be deterministic).
        is_output: the last layer (no activation).

    Other arguments as :class:`BBBLinear`; nothing is sampled.

    References:
        Wu et al., "Deterministic Variational Inference for Robust Bayesian Neural
        Networks", ICLR 2019.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import CLTLinear
        >>> layer = CLTLinear(3, 2, act="crelu", is_input=True, rngs=nnx.Rngs(0))
        >>> mean, var = layer(jnp.ones((5, 3)))
        >>> mean.shape, bool(jnp.all(var >= 0))
        ((5, 4), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        act: str = "relu",
        is_input: bool = False,
        is_output: bool = False,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_features, out_features, act=act, is_input=is_input, is_output=is_output, rngs=rngs, **kwargs
        )

    def __call__(
        self, mu: Array, var: Array | None = None, *, map: bool | None = None
    ) -> tuple[Array, Array | None]:
        """Propagates ``(mu, var)`` (rules as :meth:`bayeslayers_jax.CLTLinear.__call__`).

        Args:
            mu: input means, features on the last axis.
            var: input variances of ``mu``'s shape, or ``None`` (input layer or MAP only).
            map: MAP mode for this call (wins over the attribute).

        Returns:
            ``(mean, var)``; ``(mean, None)`` in MAP mode.
        """
        return self._clt_call(mu, var, map)


class CLTLinearDet(CLTLinear):
    """:class:`CLTLinear` with deterministic weights (NNX): parameters ``weight_mu``, ``bias_mu``.

    .. math::
        m = \\mu\\,W + b,\\qquad v = \\mathrm{var}\\,W^2

    No std parameters, no prior, no KL (:meth:`kl` raises); with ``var=None`` it is a plain
    dense layer with activation returning ``(mean, None)``. The twin of
    :class:`bayeslayers_jax.CLTLinearDet`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx import CLTLinearDet
        >>> layer = CLTLinearDet(3, 2, is_output=True, rngs=nnx.Rngs(0))
        >>> sorted(nnx.to_pure_dict(nnx.state(layer, nnx.Param)))
        ['bias_mu', 'weight_mu']
        >>> mean, var = layer(jnp.ones((5, 3)), jnp.full((5, 3), 0.1))
        >>> var.shape
        (5, 2)
    """

    _has_std = False


#: Layer types accepted by :class:`BayesianMLP`, and the NNX modules they build.
LAYER_TYPES = {"bbb": BBBLinear, "lr": LRLinear, "clt": CLTLinear, "cltdet": CLTLinearDet}


def stream_key(rngs: Any, rng_collection: str, layer_name: str, *, own: Any = None) -> Array:
    """One key from the ``rng_collection`` stream of ``rngs`` (an ``nnx.Rngs`` or a stream).

    Without ``rngs`` the key comes from ``own`` (a layer's own stream); with neither, the
    package's missing-key error (:func:`~bayeslayers_jax._layer_core.missing_key_error`).
    An ``nnx.Rngs`` gives its stream of that name only, never ``'default'``.
    """
    if rngs is None:
        stream = own
    elif isinstance(rngs, nnx.Rngs):
        stream = rngs[rng_collection] if rng_collection in rngs else None
    elif isinstance(rngs, nnx.RngStream):
        stream = rngs
    else:
        raise TypeError(
            f"rngs must be an nnx.Rngs or an nnx.RngStream (pass a key as rng=), got {type(rngs).__name__}"
        )
    if stream is None:
        raise core.missing_key_error(layer_name, rng_collection, stream_remedy(rng_collection))
    return stream()


class FlipoutLinear(BayesianLinear):
    """Flipout linear layer (NNX): one weight perturbation per call, decorrelated per example.

    .. math::
        y_n = x_n \\mu_W + \\big((x_n \\odot s_n)\\, \\Delta W\\big) \\odot r_n + \\mu_b
        + \\Delta b \\odot r_n, \\qquad \\Delta W = \\sigma_W \\odot E

    with random signs ``s_n``, ``r_n`` per example and one Gaussian ``E`` per call
    (:func:`~bayeslayers_jax._layer_core.flipout_forward`, the draw of the linen twin
    :class:`bayeslayers_jax.FlipoutLinear`, so ``rng=key`` gives bit-identical outputs).
    Arguments as :class:`BBBLinear`.

    References:
        Wen et al., "Flipout: Efficient Pseudo-Independent Weight Perturbations on
        Mini-Batches", ICLR 2018.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from bayeslayers_jax.nnx._linear import FlipoutLinear
        >>> layer = FlipoutLinear(3, 2, rngs=nnx.Rngs(params=0, sample=1))
        >>> y = layer(jnp.ones((5, 3)))
        >>> y.shape, bool(jnp.all(y == y[0]))  # identical inputs, decorrelated outputs
        ((5, 2), False)
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)

    def __call__(
        self, x: Array, *, map: bool | None = None, rng: Array | None = None, rngs: Any = None
    ) -> Array:
        """Applies the layer (arguments as :meth:`BBBLinear.__call__`)."""
        return self._sample_call(core.flipout_forward, x, map, rng, rngs)
