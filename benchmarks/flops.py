"""Benchmark shapes and the explicit matmul FLOP model of every method.

The FLOP limit of a method is the ratio of its matrix-multiply FLOPs to those of a plain
``flax.linen.Dense`` network of the same shapes. A method that runs at its FLOP limit has a
measured time ratio equal to that number; the suite reports ``time ratio / FLOP ratio``, so
1.0 means "as fast as the arithmetic allows" and larger numbers are overhead.

Counting rules (stated once, used everywhere):

* A matmul ``(B, n) @ (n, m)`` costs ``2 * B * n * m`` FLOPs (one multiply and one add per
  term). Only matmuls are counted. Elementwise work is left out on purpose: bias adds,
  ReLU, the ReLU moment matching of the CLT layers (``erf``, ``exp``, divisions: O(B * m)
  per layer), weight sampling of BBB (O(n * m)), the optimizer update (O(parameters)). At the
  benchmark shapes these terms are at most a few percent of the matmul FLOPs, but they are
  memory-bound, so on hardware where the matmuls are fast they can dominate the time; the
  ``vs FLOP limit`` column shows exactly that overhead.
* Forward matmuls per layer ``n -> m``:

  ========  ==============================================================  =========
  method    matmuls                                                          factor
  ========  ==============================================================  =========
  Dense     ``x @ W``                                                        1
  MAP       ``x @ W_mu``                                                     1
  BBB       ``x @ W`` with ``W = W_mu + W_std * eps`` sampled once per call  1
  LR        ``x @ W_mu`` and ``x**2 @ W_std**2``                             2
  CLT       input layer (no input variance): ``mu @ W_mu``,
            ``mu**2 @ W_std**2``; other layers: ``mu @ W_mu``,
            ``(var + mu**2) @ W_std**2``, ``var @ W_mu**2``                  2 / 3
  CLTDet    input layer: ``mu @ W_mu`` (the variance is zero);
            other layers: ``mu @ W_mu``, ``var @ W_mu**2``                   1 / 2
  ========  ==============================================================  =========

  So for hidden layers BBB is 1x Dense, LR 2x and CLT 3x; with the cheaper input layer the
  whole-network CLT factor is a little under 3 (2.91 at the RL shape, 2.80 at the wide one).
* Train step (forward, loss, backward): a matmul whose left operand depends on the
  parameters costs ``3x`` its forward FLOPs (forward, gradient with respect to the input and
  with respect to the weights); one whose left operand is data only (the input ``x`` or
  ``x**2`` of the first layer) costs ``2x`` (no input gradient is needed).

References:
  Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (the 2N forward / 6N train
  FLOP rule this count refines).
"""

from __future__ import annotations

import dataclasses
import math

__all__ = [
    "METHODS",
    "SHAPES",
    "Shape",
    "flop_ratio",
    "matmul_flops",
]

#: Methods benchmarked, in table order. ``dense`` is the plain ``flax.linen.Dense`` baseline.
METHODS = ("dense", "map", "bbb", "lr", "clt", "cltdet")


@dataclasses.dataclass(frozen=True)
class Shape:
    """A benchmark problem: batch size and layer widths ``in -> hidden... -> out``.

    With ``spatial`` the network is convolutional: the inputs are images
    ``(batch, *spatial, widths[0])``, every layer but the last is a ``'SAME'`` convolution of
    ``kernel_size`` per spatial axis (``widths`` are then channels), followed by global
    average pooling and the dense output layer. A convolution counts as the matmul it is
    (im2col): ``(batch * prod(spatial), prod(kernel) * in) @ (prod(kernel) * in, out)``.

    Attributes:
      name: short name used on the command line (``--shapes rl,wide``).
      batch: rows per forward pass (images for a convolutional shape).
      widths: ``(in, h1, ..., out)``; the network has ``len(widths) - 1`` layers.
      mc_samples: Monte Carlo samples per vmapped predictive call.
      description: human readable description for the report.
      spatial: image size for a convolutional shape; ``()`` for an MLP.
      kernel_size: kernel size per spatial axis of the convolutions.
    """

    name: str
    batch: int
    widths: tuple[int, ...]
    mc_samples: int
    description: str
    spatial: tuple[int, ...] = ()
    kernel_size: int = 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input batch: ``(batch, in)`` or ``(batch, *spatial, in)``."""
        return (self.batch, *self.spatial, self.widths[0])

    def layer_matmul(self, index: int) -> tuple[int, int, int]:
        """``(rows, inner, out)`` of layer ``index``'s matmul (see the class docstring)."""
        n_in, n_out = self.layers[index]
        if self.spatial and index < len(self.layers) - 1:
            pixels, taps = math.prod(self.spatial), self.kernel_size ** len(self.spatial)
            return self.batch * pixels, taps * n_in, n_out
        return self.batch, n_in, n_out

    @property
    def features(self) -> list[int]:
        """Output widths of each layer (the ``features`` argument of the MLPs)."""
        return list(self.widths[1:])

    @property
    def layers(self) -> list[tuple[int, int]]:
        """``(in, out)`` of every layer."""
        return list(zip(self.widths[:-1], self.widths[1:]))

    def label(self) -> str:
        """``'batch 256, 24 -> 256 -> 256 -> 1'`` (``'batch 64, 16x16x3 -> conv3x3 32 -> ...'``)."""
        if not self.spatial:
            return f"batch {self.batch}, " + " -> ".join(str(w) for w in self.widths)
        kernel = "x".join([str(self.kernel_size)] * len(self.spatial))
        image = "x".join(str(d) for d in (*self.spatial, self.widths[0]))
        convs = " -> ".join(f"conv{kernel} {w}" for w in self.widths[1:-1])
        return f"batch {self.batch}, {image} -> {convs} -> avg pool -> {self.widths[-1]}"


SHAPES = {
    "rl": Shape("rl", 256, (24, 256, 256, 1), 64, "RL critic"),
    "mid": Shape("mid", 1024, (64, 512, 512, 1), 16, "mid-size MLP"),
    "wide": Shape("wide", 4096, (512, 2048, 2048, 1), 4, "wide MLP"),
    "conv": Shape("conv", 64, (3, 32, 32, 10), 8, "small conv net", spatial=(16, 16)),
}


def _layer_matmuls(method: str, index: int) -> list[bool]:
    """Matmuls of one layer, as a list of "left operand depends on the parameters" flags."""
    first = index == 0
    needs_grad = not first
    if method in ("dense", "map", "bbb"):
        return [needs_grad]
    if method == "lr":
        return [needs_grad, needs_grad]
    if method == "clt":
        return [needs_grad, needs_grad] if first else [True, True, True]
    if method == "cltdet":
        return [needs_grad] if first else [True, True]
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def matmul_flops(method: str, shape: Shape, mode: str = "forward") -> int:
    """Matmul FLOPs of one forward pass or one train step (see the module docstring).

    Args:
      method: one of :data:`METHODS`.
      shape: the benchmark shape.
      mode: ``'forward'`` or ``'train'``.

    Returns:
      The FLOP count as an integer.
    """
    if mode not in ("forward", "train"):
        raise ValueError(f"mode must be 'forward' or 'train', got {mode!r}")
    total = 0
    for index in range(len(shape.layers)):
        rows, inner, n_out = shape.layer_matmul(index)
        base = 2 * rows * inner * n_out
        for left_needs_grad in _layer_matmuls(method, index):
            if mode == "forward":
                total += base
            else:
                total += base * (3 if left_needs_grad else 2)
    return total


def flop_ratio(method: str, shape: Shape, mode: str = "forward") -> float:
    """FLOP limit of ``method``: its matmul FLOPs divided by the Dense network's."""
    return matmul_flops(method, shape, mode) / matmul_flops("dense", shape, mode)
