"""Shared by the convolution tests: ground truth by sampling, and the 4-standard-error check.

The truth is the definition: draw the input and the kernel, convolve with
:class:`flax.linen.Conv` (whose conventions the package follows), add the bias.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Configurations exercised by the Monte Carlo tests: strides, every kind of padding,
# input and kernel dilation, feature groups, one and two spatial axes.
CONV_CASES = {
    "strided_same": dict(kernel_size=(3, 3), conv=dict(strides=2, padding="SAME")),
    "kernel_dilation": dict(kernel_size=(2, 2), conv=dict(padding="VALID", kernel_dilation=2)),
    "input_dilation_explicit": dict(
        kernel_size=(2, 3), conv=dict(padding=((1, 0), (0, 1)), input_dilation=(2, 1), strides=(2, 2))
    ),
    "groups_circular": dict(kernel_size=(3, 3), conv=dict(strides=2, padding="CIRCULAR", feature_group_count=2)),
    "causal_1d": dict(kernel_size=(3,), conv=dict(strides=2, padding="CAUSAL", kernel_dilation=2)),
}
IN_FEATURES, FEATURES = 4, 2


def case_arrays(name, rng, *, input_var=True):
    """Input means/variances and kernel means/stds of one case (float64), batch of one."""
    case = CONV_CASES[name]
    ks = case["kernel_size"]
    groups = case["conv"].get("feature_group_count", 1)
    spatial = (4,) * len(ks)
    mu = jnp.asarray(rng.normal(size=(1,) + spatial + (IN_FEATURES,)))
    var = jnp.asarray(rng.uniform(0.1, 1.0, mu.shape)) if input_var else None
    k_shape = ks + (IN_FEATURES // groups, FEATURES)
    k_mu = jnp.asarray(rng.normal(size=k_shape))
    k_std = jnp.asarray(rng.uniform(0.2, 0.8, k_shape))
    b_mu, b_std = jnp.asarray(rng.normal(size=FEATURES)), jnp.asarray(rng.uniform(0.2, 0.8, FEATURES))
    return mu, var, k_mu, k_std, b_mu, b_std


def conv(x, kernel, **conv_args):
    """``flax.linen.Conv`` without bias applied with the given kernel."""
    module = nn.Conv(kernel.shape[-1], kernel.shape[:-2], use_bias=False, param_dtype=kernel.dtype, **conv_args)
    return module.apply({"params": {"kernel": kernel}}, x)


def sample_outputs(key, n, mu, var, k_mu, k_std, b_mu, b_std, conv_args):
    """``n`` draws of ``conv(x, K) + b`` with ``x ~ N(mu, var)``, ``K ~ N(k_mu, k_std**2)``,
    ``b ~ N(b_mu, b_std**2)``, all independent (``var``/``k_std``/``b_std`` None: fixed)."""
    kx, kk, kb = jax.random.split(key, 3)

    def draw(k, m, s):
        return m if s is None else m + s * jax.random.normal(k, m.shape, m.dtype)

    def one(kx, kk, kb):
        y = conv(draw(kx, mu, None if var is None else jnp.sqrt(var)), draw(kk, k_mu, k_std), **conv_args)
        return y if b_mu is None else y + draw(kb, b_mu, b_std).reshape((1,) * (y.ndim - 1) + (-1,))

    # lax.map, not vmap: a vmapped kernel becomes one grouped convolution, slow on CPU.
    keys = tuple(jax.random.split(k, n) for k in (kx, kk, kb))
    return np.asarray(jax.jit(lambda keys: jax.lax.map(lambda k: one(*k), keys))(keys))


def assert_moments_within_4se(samples, mean, var):
    """Sample mean and variance over axis 0 agree with ``(mean, var)`` within 4 standard errors.

    The samples need not be Gaussian (products of Gaussians, random signs): the standard error
    of the sample variance comes from the sample's fourth central moment.
    """
    n = samples.shape[0]
    mean, var = np.asarray(mean), np.asarray(var)
    m, v = samples.mean(0), samples.var(0, ddof=1)
    se_m = np.sqrt(var / n)
    se_v = np.sqrt(np.maximum(((samples - m) ** 4).mean(0) - v**2, 0) / n)
    assert np.all(np.abs(m - mean) <= 4 * se_m), np.max(np.abs(m - mean) / se_m)
    assert np.all(np.abs(v - var) <= 4 * se_v), np.max(np.abs(v - var) / se_v)
