"""Private: the linear maps a Bayesian layer contracts its input with (dense or convolution).

Every formula of the package that is linear in the weights (the CLT moments, local
reparameterization, Flipout) is written once against a *linear map* ``A(x, K)``, bilinear
in the input ``x`` and the kernel ``K``:

* :data:`DENSE`: ``A(x, K) = x @ K`` with ``K`` of shape ``(in_features, features)``;
* :class:`Conv`: ``A(x, K)`` is :class:`flax.linen.Conv` (hence
  ``jax.lax.conv_general_dilated``) with the kernel ``K`` of Flax's shape
  ``(*kernel_size, in_features // feature_group_count, features)``, channels last,
  any number of spatial axes, any number of leading batch axes (or none).

A map also knows the shape of one *example's channel axis* (``sign_shape``): the shape of
the per-example random signs Flipout multiplies the inputs and outputs with, broadcast over
the spatial axes of a convolution so that each example sees one consistent kernel.

Shapes are static under ``jax.jit``, so every check here runs at trace time.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import check_kernel

__all__ = ["Dense", "Conv", "DENSE"]

Padding = str | int | Sequence[int | tuple[int, int]]


def _shape(a) -> tuple[int, ...]:
    return tuple(jnp.shape(a))


@dataclasses.dataclass(frozen=True)
class Dense:
    """``x @ K`` for a ``(in_features, features)`` kernel and ``x`` of shape ``(..., in)``."""

    def check(self, x_name: str, x: jax.Array, kernel_name: str, kernel: jax.Array) -> None:
        """Raises ``ValueError`` naming both arguments unless ``x`` and ``kernel`` fit."""
        check_kernel(x_name, x, kernel_name, kernel)

    def __call__(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return x @ kernel

    def sign_shape(self, x: jax.Array, kernel: jax.Array, *, output: bool) -> tuple[int, ...]:
        """Shape of one random sign per example and input (or output) feature."""
        width = _shape(kernel)[-1] if output else _shape(x)[-1]
        return _shape(x)[:-1] + (width,)


DENSE = Dense()


@dataclasses.dataclass(frozen=True)
class Conv:
    """A channels-last convolution with :class:`flax.linen.Conv`'s arguments and conventions.

    The number of spatial axes is the kernel's rank minus 2; the input has shape
    ``(*batch, *spatial, in_features)`` with any number of batch axes (zero included).
    """

    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    input_dilation: int | Sequence[int] = 1
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1

    def __post_init__(self):
        # Sequences become tuples so that the map is hashable (a static jit argument).
        for name in ("strides", "input_dilation", "kernel_dilation", "padding"):
            value = getattr(self, name)
            if not isinstance(value, (str, int)):
                value = tuple(v if isinstance(v, int) else tuple(v) for v in value)
                object.__setattr__(self, name, value)
        groups = self.feature_group_count
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"`feature_group_count` must be a positive integer, got {groups!r}.")

    def check(self, x_name: str, x: jax.Array, kernel_name: str, kernel: jax.Array) -> None:
        """Raises ``ValueError`` naming both arguments unless ``x`` and ``kernel`` fit."""
        k, xs, groups = _shape(kernel), _shape(x), self.feature_group_count
        if len(k) < 3:
            raise ValueError(
                f"`{kernel_name}` must be a convolution kernel of shape (*kernel_size, "
                f"in_features // feature_group_count, features) with at least one spatial "
                f"axis, got shape {k}."
            )
        spatial = len(k) - 2
        if len(xs) < spatial + 1:
            raise ValueError(
                f"`{x_name}` must have shape (*batch, {spatial} spatial axes, in_features) for "
                f"`{kernel_name}` of shape {k}, got shape {xs}."
            )
        if xs[-1] != k[-2] * groups:
            raise ValueError(
                f"The last axis of `{x_name}` (shape {xs}) must equal in_features = "
                f"{k[-2]} * feature_group_count ({groups}) = {k[-2] * groups} of "
                f"`{kernel_name}` (shape {k})."
            )
        if k[-1] % groups:
            raise ValueError(
                f"The features of `{kernel_name}` (shape {k}) must be divisible by "
                f"feature_group_count = {groups}."
            )

    def __call__(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        k = _shape(kernel)
        # parent=None: a free-standing module, applied functionally. Without it, a call from
        # inside a running linen module (a layer's forward, bayesianize's interceptor) would
        # make flax adopt the throw-away Conv as a child of that module.
        conv = nn.Conv(
            features=k[-1],
            kernel_size=k[:-2],
            strides=self.strides,
            padding=self.padding,
            input_dilation=self.input_dilation,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=self.feature_group_count,
            use_bias=False,
            dtype=kernel.dtype,
            param_dtype=kernel.dtype,
            parent=None,
        )
        return conv.apply({"params": {"kernel": kernel}}, x)

    def sign_shape(self, x: jax.Array, kernel: jax.Array, *, output: bool) -> tuple[int, ...]:
        """One sign per example and channel, broadcast over the spatial axes."""
        spatial = len(_shape(kernel)) - 2
        width = _shape(kernel)[-1] if output else _shape(x)[-1]
        return _shape(x)[: -1 - spatial] + (1,) * spatial + (width,)
