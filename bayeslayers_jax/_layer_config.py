"""What a Bayesian layer is built from, whatever front end holds it (private).

The rules every layer applies before it computes anything, written once for the
``flax.linen`` and ``flax.nnx`` front ends (which reach them through
:mod:`bayeslayers_jax._layer_core`):

* the constants (:data:`INIT_RHO`, the activations :data:`ACTS`, the parameter names) and the
  initializers (:data:`default_weight_mu_init`, :func:`torch_bias_init`);
* configuration checks (:func:`check_layer_config`, :func:`check_prior_value`) and the prior
  rules (:func:`bias_prior_values`, :func:`prior_specs`, :func:`prior_values`);
* the input checks (:func:`check_input`, :func:`check_input_width`, :func:`check_var`) and
  the errors the layers raise (:func:`missing_key_error`, :func:`missing_var_error`,
  :func:`require_std`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bayeslayers_jax._checks import as_float_array, check_concrete_real

Array = jax.Array
Dtype = Any

#: Initial value of every ``rho`` parameter, as in the reference (std ``exp(-4.6) ~ 0.01``).
INIT_RHO = -4.6

#: The activations of the CLT layers.
ACTS = ("relu", "crelu")

PARAM_NAMES = ("weight_mu", "weight_rho", "bias_mu", "bias_rho")

#: Kaiming-uniform with ``a = sqrt(5)`` (PyTorch's ``nn.Linear`` default):
#: ``gain = sqrt(2 / (1 + a**2)) = sqrt(1/3)``, ``bound = sqrt(3) * gain / sqrt(fan_in)
#: = 1 / sqrt(fan_in)``; the same as ``variance_scaling(1/3, 'fan_in', 'uniform')``.
default_weight_mu_init: Any = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


# --------------------------------------------------------------------- configuration
def check_features(value: Any, name: str = "features") -> None:
    """Raises unless ``value`` is a positive int (``TypeError`` for a non-int)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_rng_collection(value: Any) -> None:
    """Raises ``TypeError`` unless the name of a layer's PRNG stream is a ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"rng_collection must be a str, got {value!r}")


def check_layer_config(
    *,
    features: Any,
    use_bias: bool,
    prior_mean: Any,
    prior_std: Any,
    bias_prior_mean: Any,
    bias_prior_std: Any,
    map: Any,
    has_std: bool,
    act: str | None = None,
) -> None:
    """Checks a layer's fields, raising ``TypeError``/``ValueError`` that name the field."""
    check_features(features)
    if map is not None and not isinstance(map, (bool, np.bool_)):
        raise TypeError(f"map must be a bool or None, got {map!r}")
    if act is not None and act not in ACTS:
        raise ValueError(f"act must be one of {ACTS}, got {act!r}")
    if not has_std:
        return
    for name, value in (
        ("prior_mean", prior_mean),
        ("prior_std", prior_std),
        ("bias_prior_mean", bias_prior_mean),
        ("bias_prior_std", bias_prior_std),
    ):
        if value is not None:
            check_prior_value(name, value)
    if use_bias:
        bias_prior_values(prior_mean, prior_std, bias_prior_mean, bias_prior_std)


def check_prior_value(name: str, value: Any, label: str | None = None) -> None:
    """A concrete prior std (field ``name`` ending in ``_std``) must be > 0, a prior mean
    finite; the error names ``label`` (default ``name``, e.g. ``'prior_std[1]'``)."""
    check_concrete_real(label or name, value, "positive" if name.endswith("_std") else "finite")


def bias_prior_values(prior_mean: Any, prior_std: Any, bias_prior_mean: Any, bias_prior_std: Any) -> tuple[Any, Any]:
    """The bias prior: its own fields, else the weight prior when that is a scalar."""

    def resolve(bias_value: Any, weight_value: Any, kind: str) -> Any:
        if bias_value is not None:
            return bias_value
        if int(np.size(weight_value)) != 1:
            raise ValueError(
                f"bias_prior_{kind} must be given when prior_{kind} is weight-shaped "
                f"(got prior_{kind} of shape {np.shape(weight_value)})"
            )
        return weight_value

    return resolve(bias_prior_mean, prior_mean, "mean"), resolve(bias_prior_std, prior_std, "std")


def prior_array(value: Any, shape: tuple[int, ...], dtype: Dtype, name: str) -> Array:
    """A prior value as an array: shape ``()`` for scalars (and size-1 arrays), else ``shape``."""
    arr = jnp.asarray(value, dtype=dtype)
    if arr.size == 1:
        return jnp.reshape(arr, ())
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must be a scalar or have shape {tuple(shape)} (Flax layout), "
            f"got shape {arr.shape}"
        )
    return arr


def prior_specs(
    kernel_shape: tuple[int, ...],
    features: int,
    *,
    use_bias: bool,
    prior_mean: Any,
    prior_std: Any,
    bias_prior_mean: Any,
    bias_prior_std: Any,
) -> dict[str, tuple[Any, tuple[int, ...], str]]:
    """``{prior name: (value, shape, field name)}`` for a layer's prior variables."""
    specs = {
        "weight_mean": (prior_mean, kernel_shape, "prior_mean"),
        "weight_std": (prior_std, kernel_shape, "prior_std"),
    }
    if use_bias:
        b_mean, b_std = bias_prior_values(prior_mean, prior_std, bias_prior_mean, bias_prior_std)
        specs["bias_mean"] = (b_mean, (features,), "bias_prior_mean")
        specs["bias_std"] = (b_std, (features,), "bias_prior_std")
    return specs


def prior_values(kernel_shape: tuple[int, ...], features: int, dtype: Dtype, **fields: Any) -> dict[str, Array]:
    """The prior arrays of a layer (scalars stay ``()``), from its prior fields."""
    return {
        name: prior_array(value, shape, dtype, field)
        for name, (value, shape, field) in prior_specs(kernel_shape, features, **fields).items()
    }


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: the bias initializer of ``torch.nn.Linear``."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def param_names(*, has_std: bool, use_bias: bool) -> list[str]:
    """The parameter names a layer has."""
    names = list(PARAM_NAMES) if has_std else ["weight_mu", "bias_mu"]
    return names if use_bias else [n for n in names if not n.startswith("bias")]


# ------------------------------------------------------------------- inputs and errors
def check_input(x: Any, name: str) -> Array:
    """The package's dtype rule (real floats pass, int/bool cast, complex raises) and rank >= 1.

    A tuple raises: it is almost always a CLT layer's ``(mean, var)`` output passed as one
    argument (``mu``, to a CLT layer: pass ``layer(mean, var)``; ``x``, to a sampling layer,
    which takes one array), and would otherwise be stacked into one array.
    """
    if isinstance(x, tuple):
        if name == "mu":
            raise ValueError(
                f"mu is a tuple of {len(x)} items, e.g. a CLT layer's (mean, var) output passed as "
                "one argument: pass the mean and the variance as two arguments, "
                "mean, var = prev(h); layer(mean, var)"
            )
        raise ValueError(
            f"{name} is a tuple of {len(x)} items, but this layer takes one array: a CLT layer or "
            "model returns (mean, var), which a sampling layer (BBB, LR, Flipout) cannot take; "
            "feed it a single array, or use CLT layers throughout (layer(mean, var))"
        )
    x = as_float_array(name, x)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least one axis (features last), got shape {x.shape}")
    return x


def check_input_width(in_features: int, expected: int, input_name: str, layer_name: str) -> None:
    """Raises when an input's feature axis differs from the width the layer was built for."""
    if expected != in_features:
        raise ValueError(
            f"{input_name} has {in_features} features on its last axis, but this "
            f"{layer_name} was initialized for {expected} input features"
        )


def check_var(var: Any, mu: Array) -> Array:
    """The input variance of a CLT layer: a real float array of ``mu``'s shape."""
    var = as_float_array("var", var)
    if var.shape != mu.shape:
        raise ValueError(f"var must have mu's shape {mu.shape}, got {var.shape}")
    return var


def missing_key_error(layer_name: str, rng_collection: str, remedy: str | None = None) -> ValueError:
    """The error of a sampling call without a PRNG key.

    ``remedy`` says how the front end takes a stream key (default: linen's ``rngs=`` at
    ``apply``); the ``rng=key`` and ``map=True`` alternatives are common to all.
    """
    if remedy is None:
        remedy = f"rngs={{'{rng_collection}': key}} to apply (the rng_collection '{rng_collection}')"
    return ValueError(
        f"{layer_name} samples its weights but got no PRNG key: pass {remedy}, "
        "or rng=key at the call, or use map=True"
    )


def missing_var_error(layer_name: str) -> ValueError:
    """The error of a non-input CLT layer called without the input variance."""
    return ValueError(
        f"{layer_name} got var=None, but a non-input layer "
        "(is_input=False) needs the input variance outside MAP mode: pass var, "
        "set is_input=True, or use map=True"
    )


def require_std(has_std: bool, layer_name: str, what: str) -> None:
    """Raises for a layer with deterministic weights asked for ``what`` (std, var, KL)."""
    if not has_std:
        raise ValueError(
            f"{layer_name} has deterministic weights: it has no std parameters "
            f"and no KL divergence, so it cannot compute {what}"
        )
