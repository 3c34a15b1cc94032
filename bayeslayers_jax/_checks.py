"""Private validation helpers: clear errors that name the argument and what was wrong.

Shapes and dtypes are static under ``jax.jit``, so every check here runs at trace time and
costs nothing on the hot path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_float_array",
    "check_broadcastable",
    "check_same_shape",
    "check_kernel",
    "check_bias",
    "compute_dtype",
    "broadcast_floats",
    "concrete_value",
    "check_concrete_real",
    "nonnegative_or_nan",
    "check_target_shape",
    "check_labels",
]


def as_float_array(name: str, value: Any) -> jnp.ndarray:
    """Returns ``value`` as a floating JAX array, or raises a ``TypeError`` naming ``name``."""
    if value is None:
        raise TypeError(f"`{name}` must be an array, got None.")
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise TypeError(f"`{name}` must be a real floating array, got dtype {arr.dtype}.")
    return arr


def check_broadcastable(**arrays: jnp.ndarray) -> tuple[int, ...]:
    """Returns the broadcast shape of the named arrays, or raises ``ValueError`` naming them."""
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        described = ", ".join(f"`{n}` {s}" for n, s in shapes.items())
        raise ValueError(f"Shapes do not broadcast: {described}.") from None


def check_same_shape(**arrays: Any) -> None:
    """Raises ``ValueError`` unless the named arrays all have one shape, naming each."""
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        names = " and ".join(f"`{n}`" for n in shapes)
        described = ", ".join(f"`{n}` {s}" for n, s in shapes.items())
        raise ValueError(f"{names} must have the same shape, got {described}.")


def check_kernel(x_name: str, x: jnp.ndarray, kernel_name: str, kernel: jnp.ndarray) -> None:
    """Checks that ``kernel`` is ``(in_features, features)`` and ``x`` ends in ``in_features``."""
    if jnp.ndim(kernel) != 2:
        raise ValueError(
            f"`{kernel_name}` must be a 2-D kernel of shape (in_features, features), "
            f"got shape {jnp.shape(kernel)}."
        )
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != jnp.shape(kernel)[0]:
        raise ValueError(
            f"The last axis of `{x_name}` (shape {jnp.shape(x)}) must equal the input width "
            f"of `{kernel_name}` (shape {jnp.shape(kernel)}, in_features={jnp.shape(kernel)[0]})."
        )


def check_bias(bias_name: str, bias: jnp.ndarray, kernel_name: str, kernel: jnp.ndarray) -> None:
    """Checks that ``bias`` has shape ``(features,)`` for a kernel ending in ``features``."""
    if jnp.shape(bias) != (jnp.shape(kernel)[-1],):
        raise ValueError(
            f"`{bias_name}` must have shape ({jnp.shape(kernel)[-1]},) to match `{kernel_name}` "
            f"of shape {jnp.shape(kernel)}, got {jnp.shape(bias)}."
        )


def compute_dtype(*arrays: jnp.ndarray) -> jnp.dtype:
    """Common floating dtype of ``arrays`` (explicit promotion, valid under strict mode)."""
    return jnp.result_type(*(a.dtype for a in arrays))


def broadcast_floats(**arrays) -> list[jnp.ndarray]:
    """Converts the named values to floating arrays of one dtype and one broadcast shape.

    Broadcasting is explicit, so library code stays valid under
    ``jax_numpy_rank_promotion='raise'``; a shape mismatch raises ``ValueError`` naming them.
    """
    converted = {name: as_float_array(name, value) for name, value in arrays.items()}
    shape = check_broadcastable(**converted)
    dtype = jnp.result_type(*converted.values())
    return [jnp.broadcast_to(jnp.asarray(a, dtype), shape) for a in converted.values()]


def check_target_shape(target_name: str, target: Any, output_name: str, output: Any) -> None:
    """Raises ``ValueError`` unless ``target`` and ``output`` have exactly one shape.

    The package rule for every likelihood and metric: shapes must match exactly, nothing is
    broadcast. The message names both shapes and, for the common ``(B,)`` against ``(B, 1)``
    case, says how to fix it.
    """
    t_shape, o_shape = tuple(jnp.shape(target)), tuple(jnp.shape(output))
    if t_shape == o_shape:
        return
    hint = ""
    if o_shape == t_shape + (1,):
        hint = (
            f" Reshape the targets to the output's shape ({target_name}[..., None]) or drop the "
            f"output's unit axis ({output_name}[..., 0])."
        )
    elif t_shape == o_shape + (1,):
        hint = f" Drop the targets' unit axis ({target_name}[..., 0])."
    elif len(o_shape) > len(t_shape) and o_shape[len(o_shape) - len(t_shape) :] == t_shape:
        hint = (
            f" {output_name} has extra leading axes (an ensemble's member axis or a sample axis?):"
            " reduce them first or pass the model itself (an Ensemble) to the loss."
        )
    raise ValueError(
        f"`{target_name}` and `{output_name}` must have the same shape (nothing is broadcast), "
        f"got `{target_name}` {t_shape} and `{output_name}` {o_shape}.{hint}"
    )


def check_labels(labels: Any, num_classes: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Integer ``labels`` and the mask of those in ``[0, num_classes)``.

    Concrete labels outside the range raise ``ValueError`` naming the bad values; for traced
    labels the range cannot be checked, so callers turn the results of invalid labels into NaN
    with the returned mask (never a finite value from a wrapped index).
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    concrete = concrete_value(labels)
    if concrete is not None and concrete.size:
        bad = concrete[(concrete < 0) | (concrete >= num_classes)]
        if bad.size:
            raise ValueError(
                f"labels must lie in [0, {num_classes}) for {num_classes} classes, got "
                f"{np.unique(bad)[:10].tolist()}"
            )
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.clip(labels, 0, num_classes - 1), valid


def concrete_value(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy array, or ``None`` if it is traced (it cannot be checked now)."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


_REAL_RULES = {
    "finite": (lambda a: a.size > 0 and bool(np.all(np.isfinite(a))), "must be finite"),
    "positive": (
        lambda a: a.size > 0 and bool(np.all(np.isfinite(a))) and bool(np.all(a > 0)),
        "must be finite and > 0 everywhere",
    ),
    "nonnegative": (lambda a: not np.any(np.isnan(a)) and bool(np.all(a >= 0)), "must be >= 0 (and not NaN)"),
}


def check_concrete_real(name: str, value: Any, rule: str) -> None:
    """Checks a concrete hyperparameter (a prior, a noise variance) against ``rule``.

    ``rule`` is ``'finite'`` (non-empty, finite), ``'positive'`` (non-empty, finite, > 0) or
    ``'nonnegative'`` (no NaN, >= 0). A non-real dtype raises ``TypeError``, a violation
    ``ValueError``, both naming ``name``; a traced value cannot be checked and passes.
    """
    arr = concrete_value(value)
    if arr is None:
        return
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real number or array, got dtype {arr.dtype}")
    holds, requirement = _REAL_RULES[rule]
    if not holds(arr):
        raise ValueError(f"{name} {requirement}, got {value!r}")


def nonnegative_or_nan(name: str, value: jnp.ndarray) -> jnp.ndarray:
    """A variance argument: raises ``ValueError`` naming ``name`` if a concrete entry is < 0.

    Under ``jax.jit`` (a traced value) nothing can be checked; then every negative entry
    is replaced by NaN, so the garbage shows in every output that depends on it instead of
    producing a negative variance. NaN entries pass through (and propagate).
    """
    concrete = concrete_value(value)
    if concrete is not None:
        negative = concrete < 0
        if np.any(negative):
            raise ValueError(
                f"`{name}` must be >= 0 (a variance), got {int(negative.sum())} negative "
                f"entries (min {float(concrete[negative].min())}) in shape {concrete.shape}."
            )
        return value
    return jnp.where(value < 0, jnp.nan, value)
