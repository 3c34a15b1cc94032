"""The dense Bayesian layers (BBB, LR, Flipout, CLT, CLT-Det) as ``flax.linen`` modules.

Conventions: see :mod:`bayeslayers_jax.linen`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from bayeslayers_jax import _layer_core as core
from bayeslayers_jax._layer_core import INIT_RHO, crelu, default_weight_mu_init

__all__ = [
    "BBBLinear",
    "LRLinear",
    "CLTLinear",
    "CLTLinearDet",
    "FlipoutLinear",
    "crelu",
    "INIT_RHO",
    "default_weight_mu_init",
]

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]



class BayesianLinearBase(nn.Module):
    """Fields and parameter handling shared by the Bayesian linear layers (private)."""

    features: int
    use_bias: bool = True
    prior_mean: Any = 0.0
    prior_std: Any = 1.0
    bias_prior_mean: Any = None
    bias_prior_std: Any = None
    use_softplus: bool = False
    map: bool | None = None
    rng_collection: str = "sample"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    weight_mu_init: Initializer = default_weight_mu_init
    weight_rho_init: Initializer = nn.initializers.constant(INIT_RHO)
    bias_mu_init: Initializer | None = None
    bias_rho_init: Initializer = nn.initializers.constant(INIT_RHO)

    # Layers with deterministic weights (CLTLinearDet) override this.
    _has_std = True

    def __post_init__(self) -> None:
        core.check_rng_collection(self.rng_collection)
        core.check_layer_config(
            features=self.features,
            use_bias=self.use_bias,
            prior_mean=self.prior_mean,
            prior_std=self.prior_std,
            bias_prior_mean=self.bias_prior_mean,
            bias_prior_std=self.bias_prior_std,
            map=self.map,
            has_std=self._has_std,
            act=getattr(self, "act", None),
        )
        super().__post_init__()

    # The affine map and the kernel shape of the layer family (a convolution overrides them).
    _op = core.DENSE

    def _kernel_shape(self, in_features: int) -> tuple[int, ...]:
        return (in_features, self.features)

    def _in_features(self, kernel_shape: tuple[int, ...]) -> int:
        """The input width a kernel of ``kernel_shape`` is for (a grouped convolution overrides it)."""
        return kernel_shape[-2]

    # ----------------------------------------------------------------- priors
    def _prior_fields(self) -> dict[str, Any]:
        return dict(
            use_bias=self.use_bias,
            prior_mean=self.prior_mean,
            prior_std=self.prior_std,
            bias_prior_mean=self.bias_prior_mean,
            bias_prior_std=self.bias_prior_std,
        )

    def _priors(self, in_features: int) -> dict[str, Array]:
        """Reads each ``'prior'`` entry, creating it during ``init``; raises if ``apply`` lacks it."""
        specs = core.prior_specs(self._kernel_shape(in_features), self.features, **self._prior_fields())
        priors = {}
        for name, (value, shape, field) in specs.items():
            if self.has_variable("prior", name):
                priors[name] = self.get_variable("prior", name)
                continue
            if not self.is_initializing():
                # Never fall back to the fields at apply: a prior set with update_prior would
                # be silently replaced by the default one.
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} found no 'prior' variable {name!r}: apply "
                    "was given no 'prior' collection (e.g. model.apply({'params': params}, ...)), so "
                    "its prior (maybe set with update_prior) is unknown. Pass the full variables "
                    "returned by init, model.apply(variables, ...), or "
                    "{'params': params, 'prior': variables['prior']}"
                )
            make = lambda v=value, s=shape, f=field: core.prior_array(v, s, self.param_dtype, f)  # noqa: E731
            if self.is_mutable_collection("prior"):
                priors[name] = self.variable("prior", name, make).value
            else:
                priors[name] = make()
        return priors

    def _read_priors(self) -> dict[str, Array]:
        return self._priors(self._in_features(self._read_params()["weight_mu"].shape))

    # ------------------------------------------------------------- parameters
    def _params(self, in_features: int, input_name: str) -> dict[str, Array]:
        """Creates (at init) or fetches the parameters, checking the input width."""
        if self.has_variable("params", "weight_mu"):
            expected = self._in_features(self.get_variable("params", "weight_mu").shape)
            core.check_input_width(in_features, expected, input_name, type(self).__name__)
        shape = self._kernel_shape(in_features)
        fan_in = int(np.prod(shape[:-1]))
        inits = {
            "weight_mu": (self.weight_mu_init, shape),
            "weight_rho": (self.weight_rho_init, shape),
            "bias_mu": (self.bias_mu_init or core.torch_bias_init(fan_in), (self.features,)),
            "bias_rho": (self.bias_rho_init, (self.features,)),
        }
        return {
            name: self.param(name, inits[name][0], inits[name][1], self.param_dtype)
            for name in core.param_names(has_std=self._has_std, use_bias=self.use_bias)
        }

    def _read_params(self) -> dict[str, Array]:
        names = core.param_names(has_std=self._has_std, use_bias=self.use_bias)
        missing = [n for n in names if not self.has_variable("params", n)]
        if missing:
            raise ValueError(
                f"{type(self).__name__} has no parameters {missing}: pass the variables "
                "returned by init to apply"
            )
        return {n: self.get_variable("params", n) for n in names}

    def _require_std(self, what: str) -> None:
        core.require_std(self._has_std, type(self).__name__, what)

    def _sow_kl(self, params: dict[str, Array], in_features: int) -> None:
        """Sows the layer's KL into ``'kl'`` (overwriting, so a shared layer counts once).

        Nothing is sown during ``init``, so the initial variables hold only ``'params'``
        and ``'prior'``.
        """
        if not self._has_std:
            return
        priors = self._priors(in_features)
        if self.is_mutable_collection("kl") and not self.is_initializing():
            self.sow(
                "kl",
                "kl",
                core.layer_kl(params, priors, self.use_softplus),
                init_fn=lambda: jnp.zeros((), self.param_dtype),
                reduce_fn=lambda _, new: new,
            )

    def _merge_map(self, map: bool | None) -> bool:
        if self.map is None and map is None:
            return False
        return bool(nn.merge_param("map", self.map, map))

    def _key(self, rng: Array | None) -> Array | None:
        """The sampling key; ``None`` only while initializing without one.

        ``rng`` itself when given (never altered, so the pure functions reproduce the
        layer); else ``self.make_rng(self.rng_collection)``, the key Flax derives for this
        layer from the stream (different per layer and per draw, reproducible for the same
        stream key). See the module docstring.
        """
        if rng is not None:
            return rng
        if self.has_rng(self.rng_collection):
            return self.make_rng(self.rng_collection)
        if self.is_initializing():
            return None
        raise core.missing_key_error(type(self).__name__, self.rng_collection)

    def _setup(self, x: Any, map: bool | None, input_name: str):
        """Shared start of a call: ``(map, x, params)``; checks the input, sows the KL."""
        map_ = self._merge_map(map)
        x = core.check_input(x, input_name)
        params = self._params(x.shape[-1], input_name)
        self._sow_kl(params, x.shape[-1])
        return map_, x, params

    def _sample_call(self, forward, x: Any, map: bool | None, rng: Array | None) -> Array:
        """A sampling layer's call: the mean forward pass in MAP mode, else ``forward``."""
        map_, x, params = self._setup(x, map, "x")
        key = None if map_ else self._key(rng)
        return core.sample_forward(forward, key, x, params, self.use_softplus, self.dtype, self._op)

    def _clt_call(self, mu: Any, var: Any, map: bool | None) -> tuple[Array, Array | None]:
        """A CLT layer's call (``var=None`` allowed per :class:`CLTLinear`'s rules)."""
        map_, mu, params = self._setup(mu, map, "mu")
        # During init only the shapes matter, so a missing variance is not an error there.
        return core.clt_layer_forward(
            mu, var, params, map=map_, is_input=self.is_input, var_optional=self.is_initializing(),
            layer_name=type(self).__name__, use_softplus=self.use_softplus, dtype=self.dtype,
            act=self.act, is_output=self.is_output, op=self._op,
        )

    # ----------------------------------------------------------- public views
    def mean(self) -> tuple[Array, Array | None]:
        """Means ``(weight_mu, bias_mu)`` (``bias_mu`` is ``None`` without bias).

        Use as ``layer.apply(variables, method='mean')``.
        """
        p = self._read_params()
        return p["weight_mu"], p.get("bias_mu")

    def std(self) -> tuple[Array, Array | None]:
        """Standard deviations ``(exp(weight_rho), exp(bias_rho))`` (``softplus`` with
        ``use_softplus=True``); ``layer.apply(variables, method='std')``."""
        self._require_std("std")
        return core.param_stds(self._read_params(), self.use_softplus)

    def var(self) -> tuple[Array, Array | None]:
        """Variances, the squares of :meth:`std`; ``layer.apply(variables, method='var')``."""
        self._require_std("var")
        return core.param_vars(self._read_params(), self.use_softplus)

    def kl(self) -> Array:
        """Closed-form ``KL(q || p)`` summed over all weights and biases.

        .. math::
            \\mathrm{KL} = \\sum \\log\\frac{\\sigma_p}{\\sigma_q}
            + \\frac{\\sigma_q^2 + (\\mu_q - \\mu_p)^2}{2\\sigma_p^2} - \\frac12

        Use as ``layer.apply(variables, method='kl')``; the prior is read from the
        ``'prior'`` collection, which ``variables`` must hold (a ``ValueError`` otherwise).
        """
        self._require_std("KL")
        return core.layer_kl(self._read_params(), self._read_priors(), self.use_softplus)


class BBBLinear(BayesianLinearBase):
    """Bayes by Backprop linear layer: samples the weights once per call.

    .. math::
        W = \\mu_W + \\sigma_W \\odot \\varepsilon_W,\\quad b = \\mu_b + \\sigma_b \\odot
        \\varepsilon_b,\\quad y = x W + b,\\quad \\varepsilon \\sim \\mathcal N(0, I)

    The weights and the bias are drawn in one call of
    :func:`~bayeslayers_jax.sample_weights` with the key, the bias stacked as the
    kernel's last row (``(in + 1, features)``; one bit-generator call per layer, measured
    faster than a key split and two draws), in ``param_dtype`` and then cast to ``dtype``.
    The sample is shared by the whole batch.

    Attributes:
        features: number of output features.
        use_bias: whether to add a (Bayesian) bias.
        prior_mean, prior_std: weight prior, a scalar or an ``(in, features)`` array.
        bias_prior_mean, bias_prior_std: bias prior (scalar or ``(features,)``); ``None``
            means the weight prior (which then must be a scalar).
        use_softplus: ``std = softplus(rho)`` instead of ``exp(rho)``.
        map: MAP mode (means only); may instead be given at the call.
        rng_collection: name of the PRNG stream the noise is drawn from.
        dtype: computation dtype (``None``: inferred from inputs and parameters).
        param_dtype: dtype of the parameters and priors.
        weight_mu_init, weight_rho_init, bias_mu_init, bias_rho_init: initializers
            (``bias_mu_init=None``: ``U(-1/sqrt(in), 1/sqrt(in))`` as in PyTorch).

    References:
        Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import BBBLinear
        >>> x = jnp.ones((5, 3))
        >>> layer = BBBLinear(2)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> variables["params"]["weight_mu"].shape, variables["params"]["bias_rho"].shape
        ((3, 2), (2,))
        >>> y = layer.apply(variables, x, rng=jax.random.key(1))
        >>> bool(jnp.all(y == y[0]))  # one weight sample for the whole batch
        True
        >>> layer.apply(variables, x, map=True).shape  # means only, no key
        (5, 2)
        >>> bool(layer.apply(variables, method="kl") > 0)
        True
    """

    @nn.compact
    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None) -> Array:
        """Applies the layer.

        Args:
            x: inputs, features on the last axis.
            map: MAP mode for this call (exclusive with the ``map`` field).
            rng: PRNG key for this call; else the ``rng_collection`` stream is used.

        Returns:
            Outputs of shape ``x.shape[:-1] + (features,)``.
        """
        return self._sample_call(core.bbb_forward, x, map, rng)


class LRLinear(BayesianLinearBase):
    """Local-reparameterization linear layer: samples the pre-activations.

    .. math::
        m = x\\mu_W + \\mu_b,\\quad v = x^2 \\sigma_W^2 + \\sigma_b^2,\\quad
        y = m + \\sqrt v \\odot \\varepsilon,\\quad \\varepsilon \\sim \\mathcal N(0, I)

    with ``eps`` of the output's shape (independent per example), computed by
    :func:`~bayeslayers_jax.local_reparameterization` in ``dtype``. Fields as
    :class:`BBBLinear`.

    References:
        Kingma, Salimans and Welling, "Variational Dropout and the Local Reparameterization
        Trick", NeurIPS 2015.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import LRLinear
        >>> x = jnp.ones((5, 3))
        >>> layer = LRLinear(2)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> y = layer.apply(variables, x, rngs={"sample": jax.random.key(1)})
        >>> y.shape, bool(jnp.all(y == y[0]))  # independent noise per example
        ((5, 2), False)
        >>> w_std, b_std = layer.apply(variables, method="std")
        >>> print(round(float(w_std[0, 0]), 5))  # exp(-4.6)
        0.01005
    """

    @nn.compact
    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None) -> Array:
        """Applies the layer (arguments as :meth:`BBBLinear.__call__`)."""
        return self._sample_call(core.lr_forward, x, map, rng)


class CLTLinear(BayesianLinearBase):
    """Sampling-free layer: propagates the mean and variance with the central limit theorem.

    .. math::
        m = \\mu\\,\\mu_W + \\mu_b,\\qquad
        v = (\\mathrm{var} + \\mu^2)\\,\\sigma_W^2 + \\mathrm{var}\\,\\mu_W^2 + \\sigma_b^2

    (:func:`~bayeslayers_jax.clt_linear_moments`), then, unless ``is_output``, ReLU or
    CReLU moment matching (:func:`~bayeslayers_jax.relu_moments`,
    :func:`~bayeslayers_jax.crelu_moments`) of ``N(m, v)``; CReLU doubles the
    width. ``var=None`` means a deterministic input and is allowed only for the input layer
    (``is_input=True``), in MAP mode, or during ``init``. MAP mode returns ``(activation(mu @ W_mu + b_mu),
    None)`` (no activation on the output layer) and ignores ``var``.

    Attributes:
        act: ``'relu'`` or ``'crelu'``.
        is_input: the first layer of a network (its input may be deterministic).
        is_output: the last layer (no activation).

    Other fields as :class:`BBBLinear`; ``rng_collection`` is unused: nothing is sampled.

    References:
        Wu et al., "Deterministic Variational Inference for Robust Bayesian Neural
        Networks", ICLR 2019. Haussmann et al., "Sampling-free variational inference of
        Bayesian neural networks by variance backpropagation", UAI 2019.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import CLTLinear
        >>> x = jnp.ones((5, 3))
        >>> layer = CLTLinear(2, act="crelu", is_input=True)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> mean, var = layer.apply(variables, x)  # no key: nothing is sampled
        >>> mean.shape, bool(jnp.all(var >= 0))  # CReLU doubles the width
        ((5, 4), True)
        >>> hidden = CLTLinear(2)  # not the input layer: needs the input variance
        >>> v = hidden.init(jax.random.key(0), x)
        >>> mean, var = hidden.apply(v, x, jnp.full((5, 3), 0.1))
        >>> mean.shape, var.shape
        ((5, 2), (5, 2))
    """

    act: str = "relu"
    is_input: bool = False
    is_output: bool = False

    @nn.compact
    def __call__(
        self, mu: Array, var: Array | None = None, *, map: bool | None = None
    ) -> tuple[Array, Array | None]:
        """Propagates ``(mu, var)`` through the layer.

        Args:
            mu: input means, features on the last axis.
            var: input variances of ``mu``'s shape, or ``None`` for a deterministic input
                (input layer or MAP mode only). A concrete negative entry raises
                ``ValueError``; under ``jax.jit`` it is read as NaN (see
                :func:`~bayeslayers_jax.clt_linear_moments`). NaN propagates.
            map: MAP mode for this call (exclusive with the ``map`` field).

        Returns:
            ``(mean, var)`` of the output; ``(mean, None)`` in MAP mode.
        """
        return self._clt_call(mu, var, map)


class CLTLinearDet(CLTLinear):
    """:class:`CLTLinear` with deterministic weights: parameters ``weight_mu``, ``bias_mu``.

    .. math::
        m = \\mu\\,W + b,\\qquad v = \\mathrm{var}\\,W^2

    followed by ReLU/CReLU moment matching unless ``is_output``. With ``var=None`` (any
    layer) or in MAP mode it is a plain dense layer with activation and returns
    ``(mean, None)``. It has no std parameters, no prior and no KL: :meth:`std`,
    :meth:`var` and :meth:`kl` raise ``ValueError`` and nothing is sown into ``'kl'``. The
    prior and ``use_softplus`` fields exist for signature parity and are unused.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import CLTLinearDet
        >>> x = jnp.ones((5, 3))
        >>> layer = CLTLinearDet(2, is_output=True)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> sorted(variables["params"])
        ['bias_mu', 'weight_mu']
        >>> mean, var = layer.apply(variables, x)  # a deterministic input stays deterministic
        >>> mean.shape, var
        ((5, 2), None)
        >>> mean, var = layer.apply(variables, x, jnp.full((5, 3), 0.1))
        >>> var.shape
        (5, 2)
    """

    _has_std = False


class FlipoutLinear(BayesianLinearBase):
    """Flipout linear layer: one weight perturbation per call, decorrelated per example.

    .. math::
        y_n = x_n \\mu_W + \\big((x_n \\odot s_n)\\, \\Delta W\\big) \\odot r_n + \\mu_b
        + \\Delta b \\odot r_n, \\qquad \\Delta W = \\sigma_W \\odot E

    with random signs ``s_n``, ``r_n`` per example (every index of the leading axes) and one
    Gaussian ``E`` per call (:func:`~bayeslayers_jax.flipout`): each example's
    output has exactly the law of :class:`BBBLinear`'s, while the examples of a batch see
    nearly independent weights, so the gradient variance falls as with
    :class:`LRLinear`. Fields as :class:`BBBLinear`.

    References:
        Wen et al., "Flipout: Efficient Pseudo-Independent Weight Perturbations on
        Mini-Batches", ICLR 2018.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from bayeslayers_jax import FlipoutLinear
        >>> x = jnp.ones((5, 3))
        >>> layer = FlipoutLinear(2)
        >>> variables = layer.init(jax.random.key(0), x)
        >>> y = layer.apply(variables, x, rng=jax.random.key(1))
        >>> y.shape, bool(jnp.all(y == y[0]))  # identical inputs, decorrelated outputs
        ((5, 2), False)
    """

    @nn.compact
    def __call__(self, x: Array, *, map: bool | None = None, rng: Array | None = None) -> Array:
        """Applies the layer (arguments as :meth:`BBBLinear.__call__`)."""
        return self._sample_call(core.flipout_forward, x, map, rng)
