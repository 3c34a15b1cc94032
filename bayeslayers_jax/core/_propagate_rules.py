"""Private: the per-primitive moment rules of :func:`~bayeslayers_jax.core.propagate_moments`.

Every value the interpreter carries is a :class:`Moments` ``(mean, var, src)``: ``var`` is
``None`` for a deterministic value, else an array of the value's shape and dtype; ``src`` is
the set of random input leaves the value depends on (used to refuse products of dependent
values). A rule takes the interpreter (``ctx``: ``method``, ``normalizers``, ``call`` to
interpret a sub-jaxpr, ``error`` to build an error that names the user's source line), the
equation and its input :class:`Moments`, and returns the list of output :class:`Moments`.
The module docstring of :mod:`bayeslayers_jax.core._propagate` states what each rule assumes.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Literal, Var, jaxpr_as_fun

from bayeslayers_jax.core._moments import neg_relu_moments, relu_moments
from bayeslayers_jax.core._sampling import safe_sqrt

__all__ = ["Moments", "RULES", "CALL_JAXPR_PARAM", "NAMED_UNITS", "unit_moments", "match_layer_norm", "layer_norm_unit"]


class Moments(NamedTuple):
    """A propagated value: its mean, its variance (``None``: deterministic), its random sources."""

    mean: Any
    var: Any
    src: frozenset


NO_SOURCES: frozenset = frozenset()
RULES: dict[str, Callable] = {}


def _rule(*names):
    def register(fn):
        for name in names:
            RULES[name] = fn
        return fn

    return register


def _bind(eqn, *args):
    return eqn.primitive.bind(*args, **eqn.primitive.get_bind_params(eqn.params))


def _var_or_zeros(eqn, ins, i):
    aval = eqn.invars[i].aval
    return jnp.zeros(aval.shape, aval.dtype) if ins[i].var is None else ins[i].var


def _full(eqn, x):
    """``x`` broadcast to the (single) output's shape and dtype."""
    aval = eqn.outvars[0].aval
    x = jnp.asarray(x, aval.dtype)
    return x if x.shape == aval.shape else jnp.broadcast_to(x, aval.shape)


def _src(*ins):
    return frozenset().union(*(m.src for m in ins))


def _sources_disjoint(ctx, eqn, x, y):
    common = x.src & y.src
    if common:
        raise ctx.error(
            eqn,
            f"a product of two random values that are not independent (both depend on "
            f"{ctx.describe(common)}): mean-field propagation has no rule for it. An "
            f"activation written by hand as x * g(x) (e.g. x * sigmoid(x)) is not recognized: "
            f"use jax.nn's function (jax.nn.silu, jax.nn.gelu), which propagate_moments treats "
            f"as one unit with its exact moments",
        )


def _dependent_only_first(ctx, eqn, ins):
    if any(m.var is not None for m in ins[1:]):
        raise ctx.error(eqn, "only its first operand may be random (the others must be deterministic)")


# --------------------------------------------------------------------- linear and structural
@_rule("reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "rev", "slice", "copy", "copy_p",
       "reduce_sum", "cumsum", "reduce_window_sum", "dynamic_slice", "gather", "convert_element_type", "pad",
       "real", "reduce_precision")
def _same_map(ctx, eqn, ins):
    """Ops linear in operand 0 that move, copy or sum its elements: the same op on the variance."""
    _dependent_only_first(ctx, eqn, ins)
    if eqn.primitive.name == "convert_element_type" and not jnp.issubdtype(eqn.params["new_dtype"], jnp.floating):
        raise ctx.error(eqn, f"a random value converted to {eqn.params['new_dtype']} (not a float)")
    rest = [m.mean for m in ins[1:]]
    var_rest = [jnp.zeros((), eqn.invars[1].aval.dtype)] if eqn.primitive.name == "pad" else rest
    mean = _bind(eqn, ins[0].mean, *rest)
    return [Moments(mean, _bind(eqn, ins[0].var, *var_rest), ins[0].src)]


@_rule("concatenate")
def _concatenate(ctx, eqn, ins):
    var = _bind(eqn, *(_var_or_zeros(eqn, ins, i) for i in range(len(ins))))
    return [Moments(_bind(eqn, *(m.mean for m in ins)), var, _src(*ins))]


@_rule("select_n")
def _select_n(ctx, eqn, ins):
    if ins[0].var is not None:
        raise ctx.error(eqn, "a selection (jnp.where) whose predicate is random (depends on a random value)")
    var = _bind(eqn, ins[0].mean, *(_var_or_zeros(eqn, ins, i) for i in range(1, len(ins))))
    return [Moments(_bind(eqn, *(m.mean for m in ins)), var, _src(*ins[1:]))]


@_rule("dynamic_update_slice")
def _dynamic_update_slice(ctx, eqn, ins):
    if any(m.var is not None for m in ins[2:]):
        raise ctx.error(eqn, "random indices")
    idx = [m.mean for m in ins[2:]]
    var = _bind(eqn, _var_or_zeros(eqn, ins, 0), _var_or_zeros(eqn, ins, 1), *idx)
    return [Moments(_bind(eqn, *(m.mean for m in ins)), var, _src(*ins[:2]))]


@_rule("add", "add_any", "sub")
def _add(ctx, eqn, ins):
    x, y = ins
    mean = _bind(eqn, x.mean, y.mean)
    if eqn.invars[0] is eqn.invars[1]:  # x + x = 2x (variance 4v); x - x = 0 exactly
        if eqn.primitive.name == "sub":
            return [Moments(mean, None, NO_SOURCES)]
        return [Moments(mean, _full(eqn, 4 * x.var), x.src)]
    # Independence (stated): the variances add; the covariance of dependent terms is dropped.
    vars_ = [_full(eqn, m.var) for m in ins if m.var is not None]
    return [Moments(mean, vars_[0] if len(vars_) == 1 else vars_[0] + vars_[1], _src(x, y))]


@_rule("neg")
def _neg(ctx, eqn, ins):
    return [Moments(_bind(eqn, ins[0].mean), ins[0].var, ins[0].src)]


@_rule("mul")
def _mul(ctx, eqn, ins):
    x, y = ins
    if eqn.invars[0] is eqn.invars[1]:
        return [_square(ctx, eqn, x)]
    mean = _bind(eqn, x.mean, y.mean)
    if x.var is not None and y.var is not None:
        _sources_disjoint(ctx, eqn, x, y)
        mx, my, vx, vy = (_full(eqn, a) for a in (x.mean, y.mean, x.var, y.var))
        return [Moments(mean, (vx + mx * mx) * vy + vx * (my * my), _src(x, y))]
    r, d = (x, y) if x.var is not None else (y, x)
    c = _full(eqn, d.mean)
    return [Moments(mean, _full(eqn, r.var) * (c * c), r.src)]


@_rule("div")
def _div(ctx, eqn, ins):
    x, y = ins
    if y.var is not None:
        raise ctx.error(eqn, "a division by a random value (only division by a deterministic value has a rule)")
    c = _full(eqn, y.mean)
    return [Moments(_bind(eqn, x.mean, y.mean), _full(eqn, x.var) / (c * c), x.src)]


def _bilinear(ctx, eqn, ins):
    """``dot_general`` / ``conv_general_dilated`` (bilinear): the CLT layers' moments."""
    x, y = ins
    mean = _bind(eqn, x.mean, y.mean)
    if x.var is not None and y.var is not None:
        _sources_disjoint(ctx, eqn, x, y)
        var = _bind(eqn, x.var + x.mean * x.mean, y.var) + _bind(eqn, x.var, y.mean * y.mean)
    elif x.var is not None:
        var = _bind(eqn, x.var, y.mean * y.mean)
    else:
        var = _bind(eqn, x.mean * x.mean, y.var)
    return [Moments(mean, var, _src(x, y))]


RULES["dot_general"] = _bilinear
RULES["conv_general_dilated"] = _bilinear


def _square(ctx, eqn, x):
    m, v = _full(eqn, x.mean), _full(eqn, x.var)
    if ctx.method == "linearized":
        return Moments(m * m, 4 * (m * m) * v, x.src)
    return Moments(m * m + v, v * (4 * (m * m) + 2 * v), x.src)  # E[X^2], Var[X^2] of a Gaussian


@_rule("square")
def _square_rule(ctx, eqn, ins):
    return [_square(ctx, eqn, ins[0])]


@_rule("integer_pow")
def _integer_pow(ctx, eqn, ins):
    y = eqn.params["y"]
    if y == 1:
        return [ins[0]]
    if y == 2:
        return [_square(ctx, eqn, ins[0])]
    if y == 0:
        return [Moments(_bind(eqn, ins[0].mean), None, NO_SOURCES)]
    raise ctx.error(eqn, f"integer_pow with y={y} of a random value (only y = 0, 1, 2 have a rule)")


# ------------------------------------------------------------------------- nonlinear units
def _activations():
    """The package's public core, which holds every activation's moment function (imported
    lazily: ``bayeslayers_jax.core`` imports this module)."""
    return importlib.import_module("bayeslayers_jax.core")


def _structure():
    return importlib.import_module("bayeslayers_jax.core._structure")


def _act(name):
    return lambda m, s, *p: getattr(_activations(), name)(m, s, *p)


def _celu(m, s, alpha):  # celu(x; a) = a elu(x / a; 1) for a > 0 (jax.nn.celu)
    mean, var = _activations().elu_moments(m / alpha, s / jnp.abs(alpha), 1.0)
    return alpha * mean, (alpha * alpha) * var


def _shifted(name, a, b):  # the moments of a + b f(X)
    return lambda m, s: (lambda mean, var: (a + b * mean, var))(*getattr(_activations(), name)(m, s))


#: Exact moments ``(mu, sigma, **params) -> (mean, var)`` of each elementwise unit.
_EXACT: dict[str, Callable] = {
    "relu": relu_moments,
    "gelu": _act("gelu_moments"),
    "silu": _act("silu_moments"),
    "softplus": _act("softplus_moments"),
    "elu": _act("elu_moments"),
    "celu": _celu,
    "leaky_relu": _act("leaky_relu_moments"),
    "probit": _act("probit_moments"),
    "tanh": _act("tanh_moments"),
    "logistic": _act("sigmoid_moments"),
    "erf": _act("erf_moments"),
    "erfc": _shifted("erf_moments", 1, -1),
    "exp": _act("exp_moments"),
    "expm1": _shifted("exp_moments", -1, 1),
}

#: Named sub-jaxprs (``jit``/``custom_jvp`` names of jax.nn functions) applied as one unit, with
#: the probe ``(x, sign)`` that reads their parameter from the function: ``sign * f(x)``
#: (``elu``, ``celu``: ``f(-inf) = -alpha``; ``leaky_relu``: ``f(-1) = -negative_slope``).
NAMED_UNITS: dict[str, tuple | None] = {
    "relu": None, "silu": None, "softplus": None,
    "elu": (-np.inf, -1.0), "celu": (-np.inf, -1.0), "leaky_relu": (-1.0, -1.0),
}


def unit_moments(ctx, kind: str, x: Moments, f: Callable, aval, *params) -> Moments:
    """An elementwise unit ``f`` of kind ``kind`` applied to ``x``: exact moments, or linearized."""
    m = jnp.broadcast_to(jnp.asarray(x.mean, aval.dtype), aval.shape)
    v = jnp.broadcast_to(jnp.asarray(x.var, aval.dtype), aval.shape)
    if ctx.method == "linearized":  # f(mu), f'(mu)^2 var (first order)
        mean, slope = jax.jvp(f, (m,), (jnp.ones_like(m),))
        return Moments(mean, slope * slope * v, x.src)
    mean, var = _EXACT[kind](m, safe_sqrt(v), *params)
    return Moments(jnp.asarray(mean, aval.dtype), jnp.asarray(var, aval.dtype), x.src)


def is_var(v) -> bool:
    return isinstance(v, Var) and not isinstance(v, Literal)


def match_layer_norm(eqns, producers, consumers, i):
    """``flax.linen.LayerNorm`` around the ``rsqrt`` equation ``i``, or None.

    Matches ``(x - mean(x)) * (rsqrt(var(x) + eps) [* scale])`` with ``var(x)`` either
    ``max(0, mean(x^2) - mean(x)^2)`` (``use_fast_variance``) or ``mean((x - mean(x))^2)``,
    means over the same axes. Returns ``(root index, _Unit)``.
    """
    prod = lambda v, *names: producers.get(v) if is_var(v) and (  # noqa: E731
        producers.get(v) is not None and producers[v].primitive.name in names) else None
    lit = lambda v: float(v.val) if isinstance(v, Literal) and np.shape(v.val) == () else None  # noqa: E731
    def strip(v):  # through broadcasts and reshapes of a statistic
        while (e := prod(v, "broadcast_in_dim", "reshape")) is not None:
            v = e.invars[0]
        return v

    def mean_of(v):  # v = reduce_sum(y, axes) / n with n the reduced size -> (y, axes)
        e_div = prod(v, "div")
        e_sum = e_div and prod(e_div.invars[0], "reduce_sum")
        if e_sum is None or lit(e_div.invars[1]) is None:
            return None
        axes = tuple(e_sum.params["axes"])
        shape = e_sum.invars[0].aval.shape
        if lit(e_div.invars[1]) != float(np.prod([shape[a] for a in axes])):
            return None
        return e_sum.invars[0], axes, v

    def centred(v):  # v = x - bcast(mean(x)) -> (x, axes, the mean's variable)
        e = prod(v, "sub")
        stats = e and mean_of(strip(e.invars[1]))
        if stats is None or stats[0] is not e.invars[0]:
            return None
        return stats

    e_add = prod(eqns[i].invars[0], "add", "add_any")
    if e_add is None:
        return None
    k = [j for j in (0, 1) if lit(e_add.invars[j]) is not None]
    if len(k) != 1:
        return None
    eps, stat = lit(e_add.invars[k[0]]), strip(e_add.invars[1 - k[0]])
    e_max = prod(stat, "max")
    if e_max is not None and lit(e_max.invars[0]) == 0.0:
        stat = e_max.invars[1]
    e_sub = prod(stat, "sub")
    if e_sub is not None and prod(e_sub.invars[1], "square") is not None:  # mean(x^2) - mean(x)^2
        e_sq = prod(e_sub.invars[1], "square")
        second, mean = mean_of(e_sub.invars[0]), mean_of(e_sq.invars[0])
        e_x2 = second and prod(second[0], "square")
        if mean is None or e_x2 is None or e_x2.invars[0] is not mean[0] or second[1] != mean[1]:
            return None
    else:  # mean((x - mean(x))^2)
        second = mean_of(stat)
        e_sq = second and prod(second[0], "square")
        mean = e_sq and centred(e_sq.invars[0])
        if mean is None or second[1] != mean[1]:
            return None
    x, axes, mean_var = mean
    # Consumers: rsqrt(.) [* scale] multiplies x - mean(x).
    use = lambda v: [eqns[j] for j in consumers.get(v, ())]  # noqa: E731
    out, scale = eqns[i].outvars[0], None
    users = use(out)
    if len(users) != 1 or users[0].primitive.name != "mul":
        return None
    e_mul = users[0]
    other = e_mul.invars[1] if e_mul.invars[0] is out else e_mul.invars[0]
    c = centred(other)
    if c is None:  # rsqrt(.) * scale, then (x - mean) * that
        first = e_mul
        r_users = use(first.outvars[0])
        if len(r_users) != 1 or r_users[0].primitive.name != "mul":
            return None
        scale, e_mul = other, r_users[0]
        other = e_mul.invars[1] if e_mul.invars[0] is first.outvars[0] else e_mul.invars[0]
        c = centred(other)
    if c is None or c[0] is not x or c[1] != axes or strip(c[2]) is not strip(mean_var):
        return None
    if e_mul.outvars[0].aval.shape != x.aval.shape:
        return None
    inputs = (x,) if scale is None else (x, scale)
    # The unit's equations: everything between its inputs and its root (checked above).
    index = {id(e): j for j, e in enumerate(eqns)}
    order, stack = set(), [e_mul.outvars[0]]
    while stack:
        v = stack.pop()
        if not is_var(v) or any(v is u for u in inputs) or index[id(producers[v])] in order:
            continue
        order.add(index[id(producers[v])])
        stack.extend(producers[v].invars)
    order = sorted(order)
    return index[id(e_mul)], "layer_norm", inputs, tuple(eqns[j] for j in order), {"epsilon": eps, "axis": axes}


def layer_norm_unit(ctx, eqn, ins, aval, *, epsilon, axis) -> Moments:
    """``flax.linen.LayerNorm`` (without its bias, added by the next equation) as one unit.

    ``layer_norm_moments`` (delta method) of the input; a random ``scale`` (independent of
    the input) multiplies the result with the product rule.
    """
    norm = importlib.import_module("bayeslayers_jax.core._structure_norm")
    x, scale = ins[0], (ins[1] if len(ins) > 1 else None)
    det_scale = None if scale is None or scale.var is not None else scale.mean
    mean, var = norm.layer_norm_moments(x.mean, x.var, det_scale, None, epsilon=epsilon, axis=axis, method="delta")
    out = Moments(_full(eqn, mean), _full(eqn, var), x.src)
    if scale is None or scale.var is None:
        return out
    _sources_disjoint(ctx, eqn, x, scale)
    ms, vs = _full(eqn, scale.mean), _full(eqn, scale.var)
    return Moments(out.mean * ms, (out.var + out.mean * out.mean) * vs + out.var * (ms * ms), x.src | scale.src)


@_rule("tanh", "logistic", "erf", "erfc", "exp", "expm1")
def _elementwise_unit(ctx, eqn, ins):
    f = lambda t: _bind(eqn, t)  # noqa: E731
    return [unit_moments(ctx, eqn.primitive.name, ins[0], f, eqn.outvars[0].aval)]


def _linearize_selection(eqn, ins, f):
    """First order for ops whose outputs each select one input (max, pooling): var = (J s)^2."""
    means = [jnp.broadcast_to(m.mean, eqn.invars[i].aval.shape) for i, m in enumerate(ins)]
    stds = [safe_sqrt(_var_or_zeros(eqn, ins, i)) for i in range(len(ins))]
    mean, t = jax.jvp(f, means, stds)
    return [Moments(mean, t * t, _src(*ins))]


@_rule("max", "min")
def _max_min(ctx, eqn, ins):
    x, y = ins
    if eqn.invars[0] is eqn.invars[1]:
        return [x]
    if ctx.method == "linearized":
        return _linearize_selection(eqn, ins, lambda a, b: _bind(eqn, a, b))
    is_max = eqn.primitive.name == "max"
    if x.var is not None and y.var is not None:  # Clark (1961), the arms independent
        fn = _structure().max_moments if is_max else _structure().min_moments
        args = [_full(eqn, a) for a in (x.mean, x.var, y.mean, y.var)]
        mean, var = fn(*args)
        return [Moments(mean, var, _src(x, y))]
    r, d = (x, y) if x.var is not None else (y, x)
    m, c, s = _full(eqn, r.mean), _full(eqn, d.mean), safe_sqrt(_full(eqn, r.var))
    if is_max:  # max(X, c) = c + relu(X - c)
        mean, var = relu_moments(m - c, s)
        return [Moments(c + mean, var, r.src)]
    mean, var = relu_moments(c - m, s)  # min(X, c) = c - relu(c - X)
    return [Moments(c - mean, var, r.src)]


@_rule("abs")
def _abs(ctx, eqn, ins):
    x = ins[0]
    if ctx.method == "linearized":
        return _linearize_selection(eqn, ins, lambda a: _bind(eqn, a))
    m, s = _full(eqn, x.mean), safe_sqrt(_full(eqn, x.var))
    pos_mean, pos_var = relu_moments(m, s)
    neg_mean, neg_var = neg_relu_moments(m, s)
    # |X| = relu(X) + relu(-X); relu(X) relu(-X) = 0, so their covariance is -E+ E-.
    return [Moments(pos_mean + neg_mean, pos_var + neg_var - 2 * pos_mean * neg_mean, x.src)]


@_rule("reduce_max", "reduce_min")
def _reduce_max(ctx, eqn, ins):
    x = ins[0]
    if ctx.method == "linearized":
        return _linearize_selection(eqn, ins, lambda a: _bind(eqn, a))
    fn = _structure().max_moments if eqn.primitive.name == "reduce_max" else _structure().min_moments
    axes = tuple(eqn.params["axes"])
    shape = eqn.invars[0].aval.shape
    rest = [i for i in range(len(shape)) if i not in axes]
    k = int(np.prod([shape[i] for i in axes]))
    out_shape = eqn.outvars[0].aval.shape
    m, v = (jnp.reshape(jnp.transpose(a, axes + tuple(rest)), (k,) + out_shape) for a in (x.mean, x.var))
    while m.shape[0] > 1:  # Clark's rule pairwise, as a balanced tree (inputs independent)
        half = m.shape[0] // 2
        pm, pv = fn(m[:half], v[:half], m[half : 2 * half], v[half : 2 * half])
        m, v = jnp.concatenate([pm, m[2 * half :]]), jnp.concatenate([pv, v[2 * half :]])
    return [Moments(m[0], v[0], x.src)]


@_rule("reduce_window_max")
def _max_pool(ctx, eqn, ins):
    _dependent_only_first(ctx, eqn, ins)
    p = eqn.params
    if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
        raise ctx.error(eqn, "max pooling with dilation")
    if ctx.method == "linearized":
        return _linearize_selection(eqn, ins, lambda a: _bind(eqn, a))
    window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
    active = [i for i in range(len(window)) if (window[i], strides[i], tuple(padding[i])) != (1, 1, (0, 0))]
    if not active:
        return [ins[0]]
    first = active[0]  # axes [first, ndim) are pooled, as the spatial axes of a unit channel axis
    m, v = (a[..., None] for a in (ins[0].mean, ins[0].var))
    mean, var = _structure().max_pool_moments(
        m, v, tuple(window[first:]), tuple(strides[first:]), tuple(tuple(q) for q in padding[first:])
    )
    out_shape = eqn.outvars[0].aval.shape
    return [Moments(jnp.reshape(mean, out_shape), jnp.reshape(var, out_shape), ins[0].src)]


@_rule("rsqrt", "sqrt")
def _normalizer(ctx, eqn, ins):
    if ctx.normalizers == "deterministic":  # evaluated at the mean, variance dropped (stated)
        return [Moments(_bind(eqn, ins[0].mean), None, NO_SOURCES)]
    raise ctx.error(
        eqn,
        "the square root of a random value (e.g. a normalizer's standard deviation in a "
        "LayerNorm): pass normalizers='deterministic' to propagate_moments to evaluate it at "
        "its mean, treating the normalizing statistics as deterministic (an approximation)",
    )


@_rule("debug_callback")
def _debug_callback(ctx, eqn, ins):
    return _bind(eqn, *(m.mean for m in ins)) or []


# ------------------------------------------------------------------------------ sub-jaxprs
#: Call primitives interpreted recursively, and the parameter that holds their jaxpr.
CALL_JAXPR_PARAM = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}


def _call(ctx, eqn, ins):
    sub = eqn.params[CALL_JAXPR_PARAM[eqn.primitive.name]]
    jaxpr, consts = (sub.jaxpr, sub.consts) if isinstance(sub, ClosedJaxpr) else (sub, ())
    name = eqn.params.get("name")
    out_aval = eqn.outvars[0].aval
    if (
        name in NAMED_UNITS
        and ins[0].var is not None
        and all(m.var is None for m in ins[1:])
        and len(eqn.outvars) == 1
        and out_aval.shape == eqn.invars[0].aval.shape
    ):
        rest = [m.mean for m in ins[1:]]
        fun = jaxpr_as_fun(ClosedJaxpr(jaxpr, consts))
        f = lambda t: fun(t, *rest)[0]  # noqa: E731
        params = []
        if NAMED_UNITS[name] is not None:
            x, sign = NAMED_UNITS[name]
            value = sign * f(jnp.full(out_aval.shape, x, out_aval.dtype))
            if all(np.ndim(r) == 0 for r in rest) and value.size:
                value = jnp.reshape(value, (-1,))[0]  # one scalar parameter
            params.append(value)
        return [unit_moments(ctx, name, ins[0], f, out_aval, *params)]
    return ctx.call(jaxpr, consts, ins)


for _name in CALL_JAXPR_PARAM:
    RULES[_name] = _call


