r"""``propagate_moments``: mean-field Gaussian moment propagation through any JAX function.

:func:`propagate_moments` turns ``fn`` into a function of the *means and variances* of its
arguments that returns the means and variances of its outputs, without sampling. It traces
``fn`` to a jaxpr (:func:`jax.make_jaxpr`, on the means) and interprets the jaxpr equation by
equation, carrying ``(mean, var)`` for every random value; deterministic values are computed
by the primitive itself (``primitive.bind``), so they cost what they cost in ``fn``.

**Assumption (mean field).** Every random value is Gaussian with a *diagonal* covariance:
the elements of the inputs are independent Gaussians, and each intermediate value is
re-matched to an independent Gaussian with its exact mean and variance (where the rule is
exact) after each equation. This is the assumption of the CLT layers
(:func:`~bayeslayers_jax.core.clt_linear_moments`): on a ReLU MLP the result equals
:class:`~bayeslayers_jax.BayesianMLP` ``(layer_type='clt')`` to float rounding.

Rules (``m``, ``v``: mean and variance; ``c``: a deterministic value):

* linear maps, exact for independent operands: ``dot_general`` and ``conv_general_dilated``
  with either or both operands random, :math:`\mathbb E = m_1 \star m_2`,
  :math:`\operatorname{Var} = (v_1 + m_1^2) \star v_2 + v_1 \star m_2^2` (one operand
  deterministic: its variance 0), the arrangement of
  :func:`~bayeslayers_jax.core.clt_linear_moments`;
* ``add``, ``sub``, ``add_any``: the variances add (independence; the covariance of two
  dependent terms, e.g. a residual ``x + f(x)`` or the centring ``x - mean(x)``, is
  dropped; ``x + x`` and ``x - x`` are exact); ``neg``; ``mul`` and ``div`` by ``c``
  (:math:`v c^2`, :math:`v / c^2`); ``mul`` of two random values only when they depend on
  disjoint random inputs (then independent: :math:`(v_1 + m_1^2) v_2 + v_1 m_2^2`), else
  ``NotImplementedError``; ``x * x``, ``square`` and ``integer_pow`` ``y = 2``:
  :math:`\mathbb E = m^2 + v`, :math:`\operatorname{Var} = 4 m^2 v + 2 v^2`;
* moves, copies and sums of elements: the same operation on the variance
  (``reshape``, ``broadcast_in_dim``, ``transpose``, ``squeeze``, ``expand_dims``, ``rev``,
  ``slice``, ``dynamic_slice``, ``gather`` and ``dynamic_update_slice`` with deterministic
  indices, ``pad``, ``concatenate``, ``select_n`` with a deterministic predicate, ``copy``,
  ``convert_element_type`` between floats, ``reduce_sum``, ``cumsum``,
  ``reduce_window_sum`` (average pooling); a mean is ``reduce_sum`` then ``div``);
* ``max``/``min`` with ``c``: :math:`\max(X, c) = c + \operatorname{relu}(X - c)` with the
  ReLU moments (:func:`~bayeslayers_jax.core.relu_moments`); of two random values: Clark's
  rule (``max_moments``, ``min_moments`` of :mod:`bayeslayers_jax.core._structure`, the
  arms independent); ``reduce_max``/``reduce_min``: Clark's rule pairwise, a balanced tree;
  ``reduce_window_max`` (``flax.linen.max_pool``): ``max_pool_moments``; ``abs``: the folded
  normal, exact;
* elementwise primitives with exact moments (:mod:`bayeslayers_jax.core._activations`):
  ``tanh``, ``logistic`` (sigmoid), ``erf``, ``erfc``, ``exp``, ``expm1``;
* sub-jaxprs (``jit``, ``closed_call``, ``core_call``, ``custom_jvp_call``,
  ``custom_vjp_call``, ``remat``): interpreted recursively, except the ``jax.nn``
  activations recognized by their name, applied as one unit with their exact moments:
  ``relu``, ``silu`` (= ``swish``), ``softplus``, ``elu``, ``celu``, ``leaky_relu`` (the
  parameter, ``alpha`` or ``negative_slope``, is read from the function itself: ``f(-inf) =
  -alpha``, ``f(-1) = -negative_slope``); ``selu`` and ``log_sigmoid`` are recursed into
  and reach ``elu`` and ``softplus``; ``relu6`` reaches ``max`` then ``min`` (the ReLU's
  output re-matched to a Gaussian in between: an approximation);
* inline units recognized by their jaxpr (matched equation by equation against the jaxpr of
  the reference function): ``jax.nn.gelu`` in both forms and ``x * norm.cdf(x)`` (GELU
  moments), ``x * jax.nn.sigmoid(x)`` (SiLU), ``jax.scipy.special.ndtr`` (probit). The tanh
  form of GELU gets the moments of the exact GELU :math:`x\Phi(x)`: the two functions differ
  by at most 4.7e-4, and so do the means; the standard deviations by at most 8.7e-4
  :math:`\sigma` (measured by quadrature over :math:`|\mu| \le 6`, :math:`10^{-3} \le \sigma \le 5`);
* flax's ``LayerNorm`` (both variance forms, with or without scale and bias) recognized by
  its structure: ``layer_norm_moments`` (delta method, :mod:`~bayeslayers_jax.core._structure_norm`)
  in both methods, a random scale by the product rule;
* ``rsqrt`` and ``sqrt`` of any other random value (``jax.nn.standardize``, an RMSNorm, a
  normalization written by hand): only with ``normalizers='deterministic'``, which evaluates
  them at the mean with no variance, the normalizing statistics treated as deterministic: an
  approximation whose error is of the order of the statistics' relative spread
  :math:`O(1/\sqrt{n})` over ``n`` features; by default they raise.

Anything else with a random input (a comparison, ``jnp.where`` on a random condition,
``while``/``scan``/``cond``, ``log``, ``x * sigmoid(x)`` written otherwise, a product of
dependent values) raises ``NotImplementedError`` naming the primitive and the user's source
line: a variance is never dropped silently.

``method='linearized'`` replaces each nonlinearity (the units, elementwise primitives,
``max``/``min``/pooling, ``square``, ``abs``) by its first-order rule
:math:`f(m),\ f'(m)^2 v` (jax's derivative of the same function; for the selections
``max``/pooling the selected input's variance), the approach of SUQ (Li et al., 2025); the
linear rules stay exact.

Measured against Monte Carlo of sampled weights (``tests/test_propagate.py``: 20 000 draws,
weight std 0.1 around means of scale :math:`1/\sqrt{\text{fan-in}}`, 8 inputs x 2 outputs,
two hidden layers of 32; mean error over the outputs in Monte Carlo standard errors, the
largest; variance ratio propagated / Monte Carlo, range over the outputs, noise +-1%):

=========================================  ====================  ====================
network                                    exact: mean, ratio    linearized: same
=========================================  ====================  ====================
GELU MLP                                   2.2 SE, 0.96 - 1.02   51 SE, 0.89 - 0.99
leaky ReLU (0.1) MLP                       2.2 SE, 0.96 - 1.02   64 SE, 0.86 - 1.12
Dense, LayerNorm, GELU                     1.7 SE, 0.96 - 1.04   12 SE, 0.96 - 1.05
residual GELU block ``h + f(h)``           3.1 SE, 1.00 - 1.05   28 SE, 0.98 - 1.07
CNN, max pool of independent windows       3.0 SE, 0.92 - 0.97   24 SE, 0.93 - 1.03
CNN, 3x3 conv, 2x2 max pool (correlated)   9.2 SE, 0.94 - 1.00   50 SE, 0.90 - 0.97
SiLU MLP                                   (pending)             29 SE, 0.93 - 1.00
tanh MLP                                   (pending)             43 SE, 1.07 - 1.19
=========================================  ====================  ====================

The residual sum drops the covariance of ``h`` and ``f(h)`` (of either sign; here the output
variance comes out up to 5% high); max pooling re-matches each pairwise maximum to a Gaussian (variance 3-8% low). In
an ordinary CNN the outputs of one pooling window share the kernel and are correlated, which
mean-field propagation does not record: the maximum's mean comes out high by 0.065 output
standard deviations (9 SE), the bias ``max_pool_moments`` states. The exact SiLU and tanh
rows wait for their moment functions (``core._activations``); the tests are written.

References:
  Wu, Nowozin, Meeds, Turner, Hernandez-Lobato, Gaunt (2019). Deterministic Variational
  Inference for Robust Bayesian Neural Networks. ICLR.
  Li, Chen, Oh, Solin, Hennig, ... (2025). Streamlining Prediction in Bayesian Deep Learning
  (SUQ). ICLR.
  Clark (1961). The Greatest of a Finite Set of Random Variables. Operations Research 9(2).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import source_info_util
from jax.extend.core import Literal, Var

from bayeslayers_jax._checks import as_float_array, nonnegative_or_nan
from bayeslayers_jax.core import _propagate_rules as rules
from bayeslayers_jax.core._propagate_rules import NO_SOURCES, Moments

__all__ = ["propagate_moments"]

METHODS = ("exact", "linearized")
NORMALIZERS = ("raise", "deterministic")


# -------------------------------------------------------------------- inline unit templates
class _Template(NamedTuple):
    kind: str
    input: Var
    root: Any  # the template's output variable
    producers: dict


def _gelu_cdf(x):
    return x * jax.scipy.stats.norm.cdf(x)


def _silu_inline(x):
    return x * jax.nn.sigmoid(x)


_TEMPLATE_FUNCTIONS = (
    ("gelu", functools.partial(jax.nn.gelu, approximate=True)),
    ("gelu", functools.partial(jax.nn.gelu, approximate=False)),
    ("gelu", _gelu_cdf),
    ("silu", _silu_inline),
    ("probit", jax.scipy.special.ndtr),
)
_COMMUTATIVE = frozenset({"add", "add_any", "mul", "max", "min", "and", "or", "eq", "ne"})
_KEY_PARAMS = {"integer_pow": ("y",)}


@functools.cache
def _templates() -> tuple[_Template, ...]:
    out = []
    for kind, f in _TEMPLATE_FUNCTIONS:
        closed = jax.make_jaxpr(f)(jax.ShapeDtypeStruct((2,), jnp.float32))
        jaxpr = closed.jaxpr
        producers = {v: e for e in jaxpr.eqns for v in e.outvars}
        root = jaxpr.outvars[0]
        while root in producers and producers[root].primitive.name in ("copy", "copy_p"):
            root = producers[root].invars[0]  # a trailing copy has its own rule (identity)
        if not closed.consts and root in producers:
            out.append(_Template(kind, jaxpr.invars[0], root, producers))
    return tuple(out)


def _match(t, u, tmpl: _Template, producers: dict, binding: dict) -> dict | None:
    """Extends ``binding`` (template var -> user var) so that user atom ``u`` computes ``t``."""
    if isinstance(t, Literal):
        if not isinstance(u, Literal) or np.shape(u.val) != () or np.shape(t.val) != ():
            return None
        a, b = float(t.val), float(u.val)
        dtype = getattr(u.aval, "dtype", np.float64)
        tol = max(1e-6, 4 * float(jnp.finfo(dtype).eps)) if jnp.issubdtype(dtype, jnp.floating) else 0.0
        return binding if abs(a - b) <= tol * max(1.0, abs(a)) else None  # the constant in u's precision
    if not isinstance(u, Var) or isinstance(u, Literal):
        return None
    if t in binding:
        return binding if binding[t] is u else None
    if t is tmpl.input:
        return {**binding, t: u}
    te, ue = tmpl.producers[t], producers.get(u)
    if ue is None or ue.primitive is not te.primitive or len(ue.invars) != len(te.invars):
        return None
    if len(ue.outvars) != 1 or any(ue.params[k] != te.params[k] for k in _KEY_PARAMS.get(te.primitive.name, ())):
        return None
    orders = [ue.invars]
    if te.primitive.name in _COMMUTATIVE and len(ue.invars) == 2:
        orders.append(ue.invars[::-1])
    for order in orders:
        b: dict | None = {**binding, t: u}
        for ta, ua in zip(te.invars, order):
            b = _match(ta, ua, tmpl, producers, b)
            if b is None:
                break
        if b is not None:
            return b
    return None


class _Unit(NamedTuple):
    kind: str
    inputs: tuple  # the unit's input variables (the first one random)
    eqns: tuple  # the matched equations, in program order (the root last)
    params: dict


class _Plan(NamedTuple):
    order: list  # indices of the equations to run
    units: dict  # root index -> _Unit


def _plan(jaxpr) -> _Plan:
    """Finds the units, then the equations the outputs need (a unit needs its inputs only)."""
    eqns = jaxpr.eqns
    producers = {v: e for e in eqns for v in e.outvars}
    consumers: dict = {}
    for j, e in enumerate(eqns):
        for v in e.invars:
            if rules.is_var(v):
                consumers.setdefault(v, []).append(j)
    index = {id(e): j for j, e in enumerate(eqns)}
    units = {}
    for i, eqn in enumerate(eqns):
        if eqn.primitive.name == "rsqrt":
            found = rules.match_layer_norm(eqns, producers, consumers, i)
            if found is not None:
                units[found[0]] = _Unit(*found[1:])
        for tmpl in _templates():
            if tmpl.producers[tmpl.root].primitive is not eqn.primitive or len(eqn.outvars) != 1 or i in units:
                continue
            binding = _match(tmpl.root, eqn.outvars[0], tmpl, producers, {})
            if binding is not None:
                matched = sorted(index[id(producers[u])] for t, u in binding.items() if t is not tmpl.input)
                units[i] = _Unit(tmpl.kind, (binding[tmpl.input],), tuple(eqns[j] for j in matched), {})
                break
    needed = {v for v in jaxpr.outvars if rules.is_var(v)}
    order = []
    for i in range(len(eqns) - 1, -1, -1):
        eqn = eqns[i]
        if eqn.effects or any(v in needed for v in eqn.outvars):
            order.append(i)
            deps = units[i].inputs if i in units else eqn.invars
            needed.update(v for v in deps if rules.is_var(v))
    return _Plan(order[::-1], units)


def _eval_eqns(eqns, env: dict) -> None:
    """Evaluates deterministic equations, reading and writing plain values in ``env``."""
    read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731
    for eqn in eqns:
        out = rules._bind(eqn, *(read(v) for v in eqn.invars))
        for v, o in zip(eqn.outvars, out if eqn.primitive.multiple_results else [out]):
            env[v] = o


# ------------------------------------------------------------------------------ interpreter
class _Interpreter:
    """Walks jaxprs carrying :class:`Moments`; the context the rules receive."""

    def __init__(self, method: str, normalizers: str, names: Sequence[str]):
        self.method, self.normalizers, self.names = method, normalizers, list(names)
        self._plans: dict[int, tuple[Any, _Plan]] = {}

    def describe(self, src: frozenset) -> str:
        names = [self.names[i] for i in sorted(src)]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    def error(self, eqn, message: str) -> NotImplementedError:
        where = source_info_util.summarize(eqn.source_info)
        return NotImplementedError(
            f"propagate_moments: primitive `{eqn.primitive.name}` at {where}: {message}."
        )

    def _plan(self, jaxpr) -> _Plan:
        cached = self._plans.get(id(jaxpr))
        if cached is None or cached[0] is not jaxpr:
            cached = self._plans[id(jaxpr)] = (jaxpr, _plan(jaxpr))
        return cached[1]

    def _unit(self, unit: _Unit, ins: list, root) -> Moments:
        if unit.kind == "layer_norm":
            return rules.layer_norm_unit(self, unit.eqns[-1], ins, root.aval, **unit.params)

        def f(t):
            values = {unit.inputs[0]: t}
            _eval_eqns(unit.eqns, values)
            return values[root]

        return rules.unit_moments(self, unit.kind, ins[0], f, root.aval)

    def call(self, jaxpr, consts, ins: Sequence[Moments]) -> list[Moments]:
        plan = self._plan(jaxpr)
        env: dict = {}
        read = lambda v: Moments(v.val, None, NO_SOURCES) if isinstance(v, Literal) else env[v]  # noqa: E731
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = Moments(c, None, NO_SOURCES)
        for v, m in zip(jaxpr.invars, ins):
            env[v] = m
        for i in plan.order:
            eqn = jaxpr.eqns[i]
            unit = plan.units.get(i)
            if unit is not None and any(read(v).var is not None for v in unit.inputs):
                outs = [self._unit(unit, [read(v) for v in unit.inputs], eqn.outvars[0])]
            elif unit is not None:  # a deterministic input: the matched equations themselves
                values = {v: read(v).mean for v in unit.inputs}
                _eval_eqns(unit.eqns, values)
                outs = [Moments(values[eqn.outvars[0]], None, NO_SOURCES)]
            else:
                args = [read(v) for v in eqn.invars]
                if all(a.var is None for a in args):
                    with source_info_util.user_context(eqn.source_info.traceback, name_stack=eqn.source_info.name_stack):
                        out = rules._bind(eqn, *(a.mean for a in args))
                    out = out if eqn.primitive.multiple_results else [out]
                    outs = [Moments(o, None, NO_SOURCES) for o in out]
                else:
                    rule = rules.RULES.get(eqn.primitive.name)
                    if rule is None:
                        random = [k for k, a in enumerate(args) if a.var is not None]
                        raise self.error(
                            eqn,
                            f"no moment rule for it with a random input (operand(s) {random} random, "
                            f"depending on {self.describe(frozenset().union(*(args[k].src for k in random)))})",
                        )
                    outs = rule(self, eqn, args)
            for v, o in zip(eqn.outvars, outs):
                env[v] = _fit(o, v.aval)
        return [read(v) for v in jaxpr.outvars]


def _fit(m: Moments, aval) -> Moments:
    """A random value's variance as an array of its value's shape and dtype."""
    if m.var is None or not hasattr(aval, "shape"):
        return m
    var = jnp.asarray(m.var)
    if var.shape != aval.shape:
        var = jnp.broadcast_to(var, aval.shape)
    if var.dtype != aval.dtype:
        var = var.astype(aval.dtype)
    return Moments(m.mean, var, m.src)


# ------------------------------------------------------------------------------- public API
def _flat_inputs(means, variances):
    """The flat leaves of ``means`` with their variance (``None``: deterministic) and names."""
    if not isinstance(means, (tuple, list)):
        raise TypeError(f"`means` must be the tuple of fn's positional arguments, got {type(means).__name__}")
    if variances is None:
        variances = (None,) * len(means)
    if not isinstance(variances, (tuple, list)) or len(variances) != len(means):
        raise TypeError(
            f"`variances` must be a tuple of the same length as `means` ({len(means)}), with a "
            f"variance array or None for each leaf or subtree; got {type(variances).__name__}"
            + (f" of length {len(variances)}" if isinstance(variances, (tuple, list)) else "")
        )
    means, variances = tuple(means), tuple(variances)
    var_leaves, var_tree = jax.tree_util.tree_flatten(variances, is_leaf=lambda x: x is None)
    try:
        subtrees = var_tree.flatten_up_to(means)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "`variances` must have the structure of `means`, with None for a deterministic "
            f"leaf or subtree: {exc}"
        ) from None
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(means)[0]]
    flat_vars = []
    k = 0
    for v, sub in zip(var_leaves, subtrees):
        leaves = jax.tree_util.tree_leaves(sub)
        if v is None:
            flat_vars += [None] * len(leaves)
        else:
            if len(leaves) != 1 or jax.tree_util.tree_structure(sub).num_nodes != 1:
                raise ValueError(
                    f"variances{paths[k]} is one array but means{paths[k]} is a subtree with "
                    f"{len(leaves)} leaves: give one variance per leaf (or None)"
                )
            mean = jnp.asarray(leaves[0])
            name = f"variances{paths[k]}"
            if not jnp.issubdtype(mean.dtype, jnp.floating):
                raise TypeError(f"means{paths[k]} has dtype {mean.dtype}: only floating values can be random")
            var = as_float_array(name, v)
            if var.shape != mean.shape:
                raise ValueError(f"`{name}` must have the shape of its mean {mean.shape}, got {var.shape}")
            flat_vars.append(nonnegative_or_nan(name, var.astype(mean.dtype)))
        k += len(leaves)
    return jax.tree_util.tree_leaves(means), flat_vars, [f"means{p}" for p in paths]


def propagate_moments(
    fn: Callable, *, method: str = "exact", normalizers: str = "raise"
) -> Callable[[tuple, tuple | None], tuple[Any, Any]]:
    r"""Transforms ``fn`` to propagate diagonal Gaussian means and variances through it.

    ``propagate_moments(fn)(means, variances)`` returns ``(mean, var)``, the mean-field
    moments of ``fn(*X)`` for independent Gaussian inputs ``X`` of those means and
    variances (module docstring: the rules and their assumptions). For an affine map
    :math:`y = xW + b` with Gaussian weights they are exact,

    .. math::
       \mathbb E[y] = \mu W_\mu + b_\mu, \qquad
       \operatorname{Var}[y] = (s + \mu^2) W_v + s\,W_\mu^2 + b_v,

    and after each nonlinearity the result is re-matched to a Gaussian with the exact mean
    and variance of the nonlinearity (``method='exact'``) or with its first-order
    approximation (``method='linearized'``).

    Args:
      fn: any JAX function of positional arguments (pytrees of arrays); bind keyword and
        static arguments with :func:`functools.partial`. E.g. a ``flax.linen`` ``apply``, or
        an NNX module as ``lambda state, x: nnx.merge(graphdef, state)(x)``.
      method: ``'exact'`` (moment matching of each nonlinearity) or ``'linearized'``.
      normalizers: ``'raise'`` (default) or ``'deterministic'``: ``rsqrt``/``sqrt`` of a
        random value (LayerNorm's normalizer) evaluated at its mean with zero variance.

    Returns:
      ``propagated(means, variances=None) -> (mean, var)``. ``means`` is the tuple of
      ``fn``'s positional arguments; ``variances`` a tuple of the same structure whose
      leaves are variance arrays (the shape of their mean) or ``None`` (deterministic; a
      ``None`` may stand for a whole subtree, e.g. ``({'params': var}, None)``). ``mean``
      has the structure of ``fn``'s output; ``var`` too, with an array for every output
      that depends on a random input and ``None`` for a deterministic one. ``propagated``
      composes with :func:`jax.jit`, :func:`jax.vmap` and :func:`jax.grad` (it traces ``fn``
      at every call: jit it).

    Raises:
      NotImplementedError: a primitive with a random input and no rule, a product of
        dependent random values, ``rsqrt`` of a random value without
        ``normalizers='deterministic'``: the message names the primitive and the source line.
      ValueError: a variance of the wrong shape or structure, a concrete negative variance
        (under :func:`jax.jit` a negative variance becomes NaN).
      TypeError: ``means``/``variances`` not tuples of the arguments; a random integer input.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> def net(w, x):
      ...     return jax.nn.relu(x @ w)
      >>> x, w = jnp.array([[1.0, 2.0]]), jnp.array([[1.0], [-1.0]])
      >>> mean, var = propagate_moments(net)((w, x), (jnp.full((2, 1), 0.5), None))
      >>> print(round(float(mean[0, 0]), 4), round(float(var[0, 0]), 4))  # relu of N(-1, 0.5 + 4 * 0.5)
      0.2529 0.342
      >>> grad = jax.grad(lambda w: propagate_moments(net)((w, x), (jnp.full((2, 1), 0.5), None))[0].sum())(w)
      >>> print(grad.shape)
      (2, 1)

    References:
      Wu et al. (2019). Deterministic Variational Inference for Robust Bayesian Neural
      Networks. ICLR. Li et al. (2025). Streamlining Prediction in Bayesian Deep Learning.
      ICLR.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    if normalizers not in NORMALIZERS:
        raise ValueError(f"`normalizers` must be one of {NORMALIZERS}, got {normalizers!r}")

    @functools.wraps(fn)
    def propagated(means, variances=None):
        flat_means, flat_vars, names = _flat_inputs(means, variances)
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*means)
        random_ids = {k: i for i, k in enumerate(k for k, v in enumerate(flat_vars) if v is not None)}
        ins = [
            Moments(m, v, NO_SOURCES if v is None else frozenset({random_ids[k]}))
            for k, (m, v) in enumerate(zip(flat_means, flat_vars))
        ]
        interpreter = _Interpreter(method, normalizers, [names[k] for k in random_ids])
        outs = interpreter.call(closed.jaxpr, closed.consts, ins)
        out_tree = jax.tree_util.tree_structure(out_shape)
        out_avals = jax.tree_util.tree_leaves(out_shape)
        out_means = [jnp.asarray(o.mean, a.dtype) for o, a in zip(outs, out_avals)]
        return (
            jax.tree_util.tree_unflatten(out_tree, out_means),
            jax.tree_util.tree_unflatten(out_tree, [o.var for o in outs]),
        )

    return propagated
