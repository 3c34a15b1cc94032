r"""A fused CLT dense layer with ReLU moment matching: one Pallas kernel (forward only).

:func:`clt_dense_relu_fused` computes, in one :func:`jax.experimental.pallas.pallas_call`,
what :func:`~bayeslayers_jax.clt_linear_moments` followed by
:func:`~bayeslayers_jax.relu_moments` of ``sqrt(var)`` computes with XLA (the hidden layer of
a :class:`~bayeslayers_jax.linen.CLTLinear` network): the mean matmul, the two variance
matmuls and the ReLU moment matching, with the pre-activation moments kept on chip.

The kernel body calls those very functions on its blocks (no formula is written twice): each
program instance owns a ``(block_b, block_n)`` output tile, loops over the input width in
chunks of ``block_k``, adds :func:`~bayeslayers_jax.clt_linear_moments` of each chunk (the
bias with the first), and applies :func:`~bayeslayers_jax.relu_moments` (the tail-exact
forms) to the accumulated moments before the one store. Shapes that the blocks do not divide
are zero padded (zero inputs and zero weights add exactly 0 to every sum; the padded rows and
columns are sliced off).

Backward: the kernel is forward only. Gradients come from a :func:`jax.custom_vjp` whose
backward pass is the VJP of the reference XLA path (the two functions above), recomputed from
the saved inputs: training works, and the gradients are the reference's exactly, but the
backward pass is not fused.

Backends: compiled (Triton) on GPU; everywhere else the kernel runs in Pallas interpret mode,
which is for correctness only: it is an XLA loop over the grid of tiles, with nothing gained
from the fusion (measured 1.4x the XLA path's time for a 256 x 256 x 256 layer on a shared
2-core CPU, ``python -m benchmarks.pallas_clt --smoke`` runs the same comparison on a tiny
shape). Float32 and float64 run in interpret mode; compiled, float32 only (the float64 ReLU
tails use ``erfc``, which this jax's Triton lowering has no rule for). The GPU timing is in
``benchmarks/pallas_clt.py``; no GPU has run it yet.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from bayeslayers_jax._checks import (
    as_float_array,
    check_bias,
    check_kernel,
    check_same_shape,
    nonnegative_or_nan,
)
from bayeslayers_jax.core._clt import clt_linear_moments
from bayeslayers_jax.core._moments import relu_moments
from bayeslayers_jax.core._sampling import safe_sqrt

__all__ = ["clt_dense_relu_fused"]

_NAMES = ("x_mean", "x_var", "w_mu", "w_var", "b_mu", "b_var")
# Triton's dot needs every tile dimension >= 16; interpret mode takes any size.
_GPU_MIN_BLOCK = 16


def _reference(x_mean, x_var, w_mu, w_var, b_mu, b_var):
    """The unfused XLA path (a CLT layer's ``clt_forward`` with ``act='relu'``)."""
    mean, var = clt_linear_moments(x_mean, x_var, w_mu, w_var, b_mu, b_var)
    return relu_moments(mean, safe_sqrt(var))


def _kernel(*refs, present, block_k, n_k):
    """One ``(block_b, block_n)`` output tile: the CLT moments summed over ``n_k`` chunks of
    the input width, then the ReLU moments, stored once."""
    names = [n for n, p in zip(_NAMES, present) if p]
    ins = dict(zip(names, refs[: len(names)]))
    mean_ref, var_ref = refs[len(names):]

    def chunk(k):
        cols = pl.ds(k * block_k, block_k)
        load = lambda name, idx: ins[name][idx] if name in ins else None  # noqa: E731
        return (load("x_mean", (slice(None), cols)), load("x_var", (slice(None), cols)),
                load("w_mu", (cols, slice(None))), load("w_var", (cols, slice(None))))

    bias = [ins[n][...] if n in ins else None for n in ("b_mu", "b_var")]
    acc = clt_linear_moments(*chunk(0), *bias)

    def body(k, acc):
        mean, var = clt_linear_moments(*chunk(k))
        return acc[0] + mean, acc[1] + var

    mean, var = jax.lax.fori_loop(1, n_k, body, acc)
    out_mean, out_var = relu_moments(mean, safe_sqrt(var))
    mean_ref[...] = out_mean
    var_ref[...] = out_var


def _fit_block(block: int, dim: int, floor: int) -> int:
    """``block``, shrunk to the smallest power of two covering ``dim`` (at least ``floor``)."""
    return min(block, max(floor, pl.next_power_of_2(max(dim, 1))))


def _round_up(n: int, block: int) -> int:
    return max(block, -(-n // block) * block)


def _pallas_forward(config, args):
    block_b, block_n, block_k, interpret = config
    x_mean, _, w_mu, _, _, _ = args
    lead, k_in, n_out = x_mean.shape[:-1], x_mean.shape[-1], w_mu.shape[1]
    rows = math.prod(lead)
    dtype = x_mean.dtype
    if rows == 0 or n_out == 0:
        empty = jnp.zeros(lead + (n_out,), dtype)
        return empty, empty
    floor = 1 if interpret else _GPU_MIN_BLOCK
    bb, bn, bk = (_fit_block(b, d, floor) for b, d in ((block_b, rows), (block_n, n_out), (block_k, k_in)))
    rows_p, n_p, k_p = _round_up(rows, bb), _round_up(n_out, bn), _round_up(k_in, bk)

    def pad(a, shape):
        return jnp.pad(a, [(0, s - d) for s, d in zip(shape, a.shape)])

    x_spec = pl.BlockSpec((bb, k_p), lambda i, j: (i, 0))
    w_spec = pl.BlockSpec((k_p, bn), lambda i, j: (0, j))
    b_spec = pl.BlockSpec((bn,), lambda i, j: (j,))
    inputs, specs = [], []
    for name, a in zip(_NAMES, args):
        if a is None:
            continue
        if name.startswith("x_"):
            inputs.append(pad(a.reshape(rows, k_in), (rows_p, k_p)))
            specs.append(x_spec)
        elif name.startswith("w_"):
            inputs.append(pad(a, (k_p, n_p)))
            specs.append(w_spec)
        else:
            inputs.append(pad(a, (n_p,)))
            specs.append(b_spec)
    kernel = functools.partial(
        _kernel, present=tuple(a is not None for a in args), block_k=bk, n_k=k_p // bk
    )
    out_spec = pl.BlockSpec((bb, bn), lambda i, j: (i, j))
    mean, var = pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct((rows_p, n_p), dtype),) * 2,
        grid=(rows_p // bb, n_p // bn),
        in_specs=specs,
        out_specs=(out_spec, out_spec),
        interpret=interpret,
        name="clt_dense_relu_fused",
    )(*inputs)
    shape = lead + (n_out,)
    return mean[:rows, :n_out].reshape(shape), var[:rows, :n_out].reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(config, args):
    return _pallas_forward(config, args)


def _fused_fwd(config, args):
    return _pallas_forward(config, args), args


def _fused_bwd(config, args, cotangent):
    # The kernel is forward only: the backward pass is the reference XLA path's VJP.
    _, vjp = jax.vjp(_reference, *args)
    return (vjp(cotangent),)


_fused.defvjp(_fused_fwd, _fused_bwd)


def _check_block(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"`{name}` must be a positive power of two (an int), got {value!r}.")
    return value


def clt_dense_relu_fused(
    x_mean: jax.Array,
    x_var: jax.Array | None,
    w_mu: jax.Array,
    w_var: jax.Array | None,
    b_mu: jax.Array | None = None,
    b_var: jax.Array | None = None,
    *,
    interpret: bool | None = None,
    block_b: int = 64,
    block_n: int = 64,
    block_k: int = 32,
) -> tuple[jax.Array, jax.Array]:
    r"""Moments of ``relu(x @ W + b)`` for Gaussian ``x``, ``W``, ``b``: one fused Pallas kernel.

    Equal (to float rounding: the sums run in another order) to
    :func:`~bayeslayers_jax.relu_moments` of
    :func:`~bayeslayers_jax.clt_linear_moments`'s mean and the square root of its variance:

    .. math::
       m = \mu M + b^\mu, \quad v = (s + \mu^2) V + s M^2 + b^v, \quad
       (\mathbb E, \operatorname{Var})\big[\operatorname{relu} \mathcal N(m, v)\big]

    computed by one kernel (see :mod:`bayeslayers_jax.core._clt_pallas`). The kernel is forward
    only; gradients (a :func:`jax.custom_vjp`) are the VJP of that reference XLA path,
    recomputed in the backward pass. Compiled on GPU (float32); elsewhere Pallas interpret
    mode, which is for correctness checks only (no faster than the XLA path).

    Args:
      x_mean: input means ``(..., in_features)``.
      x_var: input variances of the same shape, or ``None`` for a deterministic input.
      w_mu: ``(in_features, features)`` weight means.
      w_var: weight variances of the same shape, or ``None`` for deterministic weights.
      b_mu: optional ``(features,)`` bias means.
      b_var: optional ``(features,)`` bias variances (requires ``b_mu``).
      interpret: run the kernel in Pallas interpret mode; ``None`` (default): compiled on a
        GPU, interpreted on any other backend.
      block_b, block_n, block_k: tile sizes (powers of two) over the batch, the output width
        and the input width; each is shrunk to the smallest power of two covering its
        dimension (at least 16 when compiled). Dimensions they do not divide are zero padded.

    Returns:
      ``(mean, var)`` of shape ``(..., features)`` in the inputs' common dtype (float32 or
      float64); the variance is >= 0. NaN in an input gives NaN in what depends on it.

    Raises:
      ValueError: shapes that do not fit (naming the argument), ``b_var`` without ``b_mu``, a
        concrete negative variance (under ``jax.jit`` it becomes NaN, as in
        :func:`~bayeslayers_jax.clt_linear_moments`), a bad block size, ``interpret=False``
        off GPU.
      TypeError: a non-real input, a dtype other than float32/float64, float64 compiled.

    Examples:
      >>> import jax.numpy as jnp
      >>> mean, var = clt_dense_relu_fused(
      ...     jnp.array([[1.0, 2.0]]), None, jnp.array([[1.0], [-1.0]]), None, jnp.array([1.0]))
      >>> print(mean, var)  # relu(1 - 2 + 1), all deterministic
      [[0.]] [[0.]]
      >>> mean, var = clt_dense_relu_fused(
      ...     jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.ones((2, 1)), None)
      >>> print(mean.round(4), var.round(4))  # relu(N(0, 2)): 1/sqrt(pi), 1 - 1/pi
      [[0.5642]] [[0.6817]]
    """
    blocks = tuple(_check_block(n, v) for n, v in (("block_b", block_b), ("block_n", block_n), ("block_k", block_k)))
    if interpret is not None and not isinstance(interpret, bool):
        raise ValueError(f"`interpret` must be None, True or False, got {interpret!r}.")
    on_gpu = jax.default_backend() == "gpu"
    interpret = (not on_gpu) if interpret is None else interpret
    if not interpret and not on_gpu:
        raise ValueError(
            f"`interpret` is False, which compiles the kernel for a GPU (Triton); the default backend is "
            f"{jax.default_backend()!r}: pass interpret=None or True."
        )
    args = dict(x_mean=x_mean, x_var=x_var, w_mu=w_mu, w_var=w_var, b_mu=b_mu, b_var=b_var)
    args = {n: None if a is None else as_float_array(n, a) for n, a in args.items()}
    check_kernel("x_mean", args["x_mean"], "w_mu", args["w_mu"])
    if args["x_var"] is not None:
        check_same_shape(x_mean=args["x_mean"], x_var=args["x_var"])
    if args["w_var"] is not None:
        check_same_shape(w_mu=args["w_mu"], w_var=args["w_var"])
    if args["b_var"] is not None and args["b_mu"] is None:
        raise ValueError("`b_var` was given without `b_mu`.")
    for name in ("b_mu", "b_var"):
        if args[name] is not None:
            check_bias(name, args[name], "w_mu", args["w_mu"])
    dtype = jnp.result_type(*(a for a in args.values() if a is not None))
    if dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"the inputs' common dtype must be float32 or float64, got {dtype}.")
    if dtype == jnp.float64 and not interpret:
        raise TypeError("float64 runs in interpret mode only (no Triton lowering of erfc); use float32.")
    args = {n: None if a is None else jnp.asarray(a, dtype) for n, a in args.items()}
    for name in ("x_var", "w_var", "b_var"):
        if args[name] is not None:
            args[name] = nonnegative_or_nan(name, args[name])
    return _fused((*blocks, interpret), tuple(args[n] for n in _NAMES))
