"""Private helpers shared by the likelihoods: float casts and the per-example sum."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["float_array", "per_example_sum"]


def float_array(x, dtype=None):
    x = jnp.asarray(x)
    if dtype is None:
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
    return x.astype(dtype)


def per_example_sum(values):
    """Sums over every axis but the first (the batch axis); a 0-d or 1-d input is per element."""
    if values.ndim <= 1:
        return values
    return jnp.sum(values, axis=tuple(range(1, values.ndim)))
