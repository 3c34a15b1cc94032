"""What every Bayesian layer does, whatever front end holds its parameters (private).

The ``flax.linen`` layers (:mod:`bayeslayers_jax.linen`), the ``flax.nnx`` layers and the
convolutions are thin wrappers: they own parameters, priors and keys in their framework's
way and call the functions here for everything else, so that a check, a prior rule, the KL
or a forward pass is written once:

* the construction rules, re-exported from :mod:`bayeslayers_jax._layer_config`
  (configuration and input checks, the prior rules, the initializers, the layers' errors);
* the shared shape of a call (:func:`sample_forward`, :func:`clt_layer_forward`);
* standard deviations and the closed-form KL from ``rho`` (:func:`param_stds`,
  :func:`layer_kl`);
* the forward passes of each method (:func:`mean_forward`, :func:`bbb_forward`,
  :func:`lr_forward`, :func:`flipout_forward`, :func:`clt_forward`, :func:`map_forward`), over an affine map
  (:class:`AffineMap`): :data:`DENSE` for the linear layers; a convolution supplies its own.

Parameters are passed as a dict with the keys ``weight_mu``, ``weight_rho``, ``bias_mu`` and
``bias_rho`` (the ones a layer has), priors as a dict with ``weight_mean``, ``weight_std``,
``bias_mean`` and ``bias_std``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

# The layers' construction rules live in _layer_config; the front ends reach every shared
# rule through this module (``from bayeslayers_jax import _layer_core as core``).
from bayeslayers_jax._layer_config import (  # noqa: F401
    INIT_RHO,
    ACTS,
    PARAM_NAMES,
    default_weight_mu_init,
    torch_bias_init,
    check_features,
    check_rng_collection,
    check_layer_config,
    check_prior_value,
    bias_prior_values,
    prior_array,
    prior_specs,
    prior_values,
    param_names,
    check_input,
    check_input_width,
    check_var,
    missing_key_error,
    missing_var_error,
    require_std,
)
from bayeslayers_jax.core._clt import clt_conv_moments, clt_linear_moments
from bayeslayers_jax.core._linear_map import Conv, Padding
from bayeslayers_jax.core._kl import kl_normal_from_log_std
from bayeslayers_jax.core._moments import crelu_moments, relu_moments
from bayeslayers_jax.core._sampling import (
    flipout,
    flipout_conv,
    local_reparameterization,
    local_reparameterization_conv,
    safe_sqrt,
    sample_weights,
)
from bayeslayers_jax.core._transforms import rho_to_log_std, rho_to_std

Array = jax.Array
Dtype = Any


class AffineMap(NamedTuple):
    """The linear map of a layer family and its three uses.

    Attributes:
        apply: ``apply(x, kernel, bias)``: ``x`` mapped by ``kernel`` plus ``bias``
            (``bias`` may be ``None``).
        local_reparameterization: ``(key, x, weight_mu, weight_std, bias_mu, bias_std)`` to
            a sample of the pre-activations
            (:func:`~bayeslayers_jax.local_reparameterization` for dense layers).
        moments: ``(mu, var, weight_mu, weight_var, bias_mu, bias_var)`` to the output
            ``(mean, var)`` (:func:`~bayeslayers_jax.clt_linear_moments`).
        flipout: ``(key, x, weight_mu, weight_std, bias_mu, bias_std)`` to a Flipout sample
            (:func:`~bayeslayers_jax.flipout` for dense layers).
    """

    apply: Callable[..., Array]
    local_reparameterization: Callable[..., Array]
    moments: Callable[..., tuple[Array, Array]]
    flipout: Callable[..., Array]


def dense(x: Array, kernel: Array, bias: Array | None) -> Array:
    """``x @ kernel + bias`` on the last axis of ``x``, bias reshaped explicitly (no rank promotion)."""
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    if bias is not None:
        y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y


#: The affine map of the dense (linear) layers.
DENSE = AffineMap(dense, local_reparameterization, clt_linear_moments, flipout)


def conv_affine_map(
    strides: int | Sequence[int] = 1,
    padding: Padding = "SAME",
    input_dilation: int | Sequence[int] = 1,
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
) -> AffineMap:
    """The convolution as the layer core's affine map: ``conv(x, kernel) + bias`` and its uses.

    Args:
      strides, padding, input_dilation, kernel_dilation, feature_group_count: as for
        :class:`flax.linen.Conv`.

    Returns:
      An affine map whose ``apply``, ``local_reparameterization``, ``moments`` and
      ``flipout`` are the convolution's (the pure functions with these arguments bound).

    Examples:
      >>> import jax.numpy as jnp
      >>> from bayeslayers_jax._layer_core import conv_affine_map
      >>> op = conv_affine_map(padding='VALID')
      >>> print(op.apply(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 2, 1)), jnp.ones(1)))
      [[[[19.]]]]
    """
    conv_args = dict(
        strides=strides,
        padding=padding,
        input_dilation=input_dilation,
        kernel_dilation=kernel_dilation,
        feature_group_count=feature_group_count,
    )
    linear = Conv(**conv_args)

    def apply(x: Array, kernel: Array, bias: Array | None) -> Array:
        linear.check("x", x, "weight_mu", kernel)
        y = linear(x, kernel)
        return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + (-1,))

    bind = functools.partial
    return AffineMap(
        apply,
        bind(local_reparameterization_conv, **conv_args),
        bind(clt_conv_moments, **conv_args),
        bind(flipout_conv, **conv_args),
    )


# ------------------------------------------------------------------------- std and KL
def param_stds(params: dict[str, Array], use_softplus: bool) -> tuple[Array, Array | None]:
    """``(weight_std, bias_std)`` from the ``rho`` parameters (``bias_std`` ``None`` without bias)."""
    w_std = rho_to_std(params["weight_rho"], use_softplus=use_softplus)
    b_std = None
    if "bias_rho" in params:
        b_std = rho_to_std(params["bias_rho"], use_softplus=use_softplus)
    return w_std, b_std


def param_vars(params: dict[str, Array], use_softplus: bool) -> tuple[Array, Array | None]:
    """``(weight_var, bias_var)``: the squares of :func:`param_stds`."""
    w_std, b_std = param_stds(params, use_softplus)
    return jnp.square(w_std), (None if b_std is None else jnp.square(b_std))


def layer_kl(params: dict[str, Array], priors: dict[str, Array], use_softplus: bool) -> Array:
    """Closed-form ``KL(q || p)`` of a layer, summed over weights and biases.

    Computed from ``rho`` (log std), never ``log(exp(rho))``: exact and finite where
    ``exp(rho)`` underflows (:func:`~bayeslayers_jax.kl_normal_from_log_std`).
    """
    terms = [("weight_mu", "weight_rho", "weight_mean", "weight_std")]
    if "bias_rho" in params:
        terms.append(("bias_mu", "bias_rho", "bias_mean", "bias_std"))
    kl = None
    for mu, rho, p_mean, p_std in terms:
        log_std = rho_to_log_std(params[rho], use_softplus=use_softplus)
        term = jnp.sum(kl_normal_from_log_std(params[mu], log_std, priors[p_mean], priors[p_std]))
        kl = term if kl is None else kl + term
    return kl


# --------------------------------------------------------------------- forward passes
def crelu(x: Array) -> Array:
    """Concatenated ReLU: ``[relu(x), relu(-x)]`` on the last axis (twice the width).

    Args:
        x: input array.

    Returns:
        ``jnp.concatenate([relu(x), relu(-x)], axis=-1)``.

    References:
        Shang et al., "Understanding and Improving Convolutional Neural Networks via
        Concatenated Rectified Linear Units", ICML 2016.

    Examples:
        >>> import jax.numpy as jnp
        >>> from bayeslayers_jax import crelu
        >>> print(crelu(jnp.array([[1.0, -2.0]])))
        [[1. 0. 0. 2.]]
    """
    return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)


def activation(act: str, x: Array) -> Array:
    """ReLU or CReLU (:func:`crelu`)."""
    return jax.nn.relu(x) if act == "relu" else crelu(x)


def activation_moments(act: str, mean: Array, var: Array) -> tuple[Array, Array]:
    """Moment matching of ``act`` applied to ``N(mean, var)``."""
    sigma = safe_sqrt(var)
    if act == "relu":
        return relu_moments(mean, sigma)
    return crelu_moments(mean, sigma)


def mean_forward(x: Array, params: dict[str, Array], dtype: Dtype | None, op: AffineMap = DENSE) -> Array:
    """The output with the weight means (``x W_mu + b_mu``), in the promoted dtype."""
    x, w, b = promote_dtype(x, params["weight_mu"], params.get("bias_mu"), dtype=dtype)
    return op.apply(x, w, b)


def map_forward(
    x: Array, params: dict[str, Array], dtype: Dtype | None, act: str, is_output: bool, op: AffineMap = DENSE
) -> Array:
    """A CLT layer's MAP output: the mean forward pass and, unless ``is_output``, ``act``."""
    y = mean_forward(x, params, dtype, op)
    return y if is_output else activation(act, y)


def bbb_forward(
    key: Array, x: Array, params: dict[str, Array], use_softplus: bool, dtype: Dtype | None, op: AffineMap = DENSE
) -> Array:
    """Bayes by Backprop: one weight sample (shared by the batch), then the affine map.

    The weights and the bias are drawn in one call of
    :func:`~bayeslayers_jax.sample_weights`, the bias stacked as the flattened
    kernel's last row: one bit-generator call per layer (measured faster than a key split
    and two draws).
    """
    w_std, b_std = param_stds(params, use_softplus)
    w_mu = params["weight_mu"]
    if b_std is not None:
        flat_mu = jnp.reshape(w_mu, (-1, w_mu.shape[-1]))
        flat_std = jnp.reshape(w_std, (-1, w_mu.shape[-1]))
        wb = sample_weights(
            key,
            jnp.concatenate([flat_mu, params["bias_mu"][None]], axis=0),
            jnp.concatenate([flat_std, b_std[None]], axis=0),
        )
        w, b = jnp.reshape(wb[:-1], w_mu.shape), wb[-1]
    else:
        w, b = sample_weights(key, w_mu, w_std), None
    x, w, b = promote_dtype(x, w, b, dtype=dtype)
    return op.apply(x, w, b)


def lr_forward(
    key: Array, x: Array, params: dict[str, Array], use_softplus: bool, dtype: Dtype | None, op: AffineMap = DENSE
) -> Array:
    """Local reparameterization: a sample of the Gaussian pre-activations."""
    return _sampled_map(op.local_reparameterization, key, x, params, use_softplus, dtype)


def flipout_forward(
    key: Array, x: Array, params: dict[str, Array], use_softplus: bool, dtype: Dtype | None, op: AffineMap = DENSE
) -> Array:
    """Flipout: one shared weight perturbation, decorrelated per example by random signs."""
    return _sampled_map(op.flipout, key, x, params, use_softplus, dtype)


def _sampled_map(sampler: Callable[..., Array], key: Array, x: Array, params: dict[str, Array],
                 use_softplus: bool, dtype: Dtype | None) -> Array:
    """``sampler(key, x, weight_mu, weight_std, bias_mu, bias_std)`` in the promoted dtype."""
    w_std, b_std = param_stds(params, use_softplus)
    x, w_mu, w_std, b_mu, b_std = promote_dtype(
        x, params["weight_mu"], w_std, params.get("bias_mu"), b_std, dtype=dtype
    )
    return sampler(key, x, w_mu, w_std, b_mu, b_std)


def clt_forward(
    mu: Array,
    var: Array | None,
    params: dict[str, Array],
    *,
    use_softplus: bool,
    dtype: Dtype | None,
    act: str,
    is_output: bool,
    op: AffineMap = DENSE,
) -> tuple[Array, Array]:
    """Moment propagation: the affine map's moments, then (unless ``is_output``) ``act``'s.

    A layer with deterministic weights (no ``weight_rho`` in ``params``) propagates only
    the input variance.
    """
    w_var = b_var = None
    if "weight_rho" in params:
        w_var, b_var = param_vars(params, use_softplus)
    mu, var, w_mu, w_var, b_mu, b_var = promote_dtype(
        mu, var, params["weight_mu"], w_var, params.get("bias_mu"), b_var, dtype=dtype
    )
    mean, out_var = op.moments(mu, var, w_mu, w_var, b_mu, b_var)
    if is_output:
        return mean, out_var
    return activation_moments(act, mean, out_var)


# ------------------------------------------------------------------------- layer calls
def sample_forward(
    forward: Callable[..., Array],
    key: Array | None,
    x: Array,
    params: dict[str, Array],
    use_softplus: bool,
    dtype: Dtype | None,
    op: AffineMap = DENSE,
) -> Array:
    """A sampling layer's output: ``forward`` (:func:`bbb_forward`, :func:`lr_forward`) with
    ``key``, or the mean forward pass when ``key`` is ``None`` (MAP mode)."""
    if key is None:
        return mean_forward(x, params, dtype, op)
    return forward(key, x, params, use_softplus, dtype, op)


def clt_layer_forward(
    mu: Array,
    var: Any,
    params: dict[str, Array],
    *,
    map: bool,
    is_input: bool,
    var_optional: bool,
    layer_name: str,
    use_softplus: bool,
    dtype: Dtype | None,
    act: str,
    is_output: bool,
    op: AffineMap = DENSE,
) -> tuple[Array, Array | None]:
    """A CLT layer's call on a checked ``mu``: MAP or moment propagation, with its ``var`` rules.

    ``(map_forward, None)`` in MAP mode, or for a deterministic layer (no ``weight_rho``)
    with a deterministic input (``var=None``); else :func:`clt_forward`. ``var=None`` is
    allowed only for an input layer (``is_input``) or when ``var_optional`` (linen's
    ``init``, which only needs the shapes); a given ``var`` is checked by :func:`check_var`.
    """
    if map or (var is None and "weight_rho" not in params):
        return map_forward(mu, params, dtype, act, is_output, op), None
    if var is None:
        if not is_input and not var_optional:
            raise missing_var_error(layer_name)
    else:
        var = check_var(var, mu)
    return clt_forward(
        mu, var, params, use_softplus=use_softplus, dtype=dtype, act=act, is_output=is_output, op=op
    )
