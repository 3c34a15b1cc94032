"""Where the natural composition's cost goes: paired toggles of the user-style step.

``python -m benchmarks.natural_toggles [budget_s]`` times, at the RL shape, the user-style BBB
and LR train steps of :mod:`benchmarks.natural` against variants that change one thing each
(calling the ``jax.jit`` function instead of the ahead-of-time compiled one, a typed
``jax.random.key``, explicit per-layer keys instead of ``make_rng``, no KL at all), all
interleaved in one process (:func:`benchmarks.timing.time_interleaved`), and prints each
variant's median and its ratio to the unchanged step. Not part of the suite's run; the
numbers are what ``docs/guides/performance.md`` quotes.
"""
import sys, jax, jax.numpy as jnp, optax, flax.linen as nn
import bayeslayers_jax as bl
from benchmarks import natural, timing
from benchmarks.flops import SHAPES
from benchmarks.models import NOISE_VAR
shape = SHAPES["rl"]; tx = optax.adam(1e-3)
x = jax.random.normal(jax.random.PRNGKey(1), shape.input_shape)
y = jax.random.normal(jax.random.PRNGKey(2), (shape.batch, 1))
class SplitMLP(nn.Module):  # explicit per-layer keys instead of make_rng
    features: tuple; layer: str
    @nn.compact
    def __call__(self, x, key):
        keys = jax.random.split(key, len(self.features)); cls = natural._LAYERS[self.layer]
        for i, w in enumerate(self.features):
            x = cls(w)(x, rng=keys[i])
            if i < len(self.features) - 1: x = nn.relu(x)
        return x
calls = {}
def add(name, step, state, aot=True):
    c = timing.compile_jitted(step, *state, x, y)[0] if aot else step
    h = {"s": jax.tree_util.tree_map(jnp.copy, state)}
    def call():
        p, o, k, l = c(*h["s"], x, y); h["s"] = (p, o, k); return l
    calls[name] = call
for m in ("bbb", "lr"):
    ns = natural.build_natural_step("natural/" + m, shape, jax.random.PRNGKey(0), tx)
    add(f"{m} base (AOT)", ns.step, ns.state)
    add(f"{m} jit call", ns.step, ns.state, aot=False)
    typed = (ns.state[0], ns.state[1], jax.random.key(0))
    add(f"{m} typed key", ns.step, typed)
    mod = SplitMLP(tuple(shape.features), m)
    v = mod.init(jax.random.PRNGKey(0), x, jax.random.PRNGKey(3))
    rest = {"prior": v["prior"]}
    def loss(p, x, y, k, mod=mod, rest=rest):
        out, st = mod.apply({"params": p, **rest}, x, k, mutable=["kl"])
        return bl.neg_elbo(bl.gaussian_nll(y, out, NOISE_VAR), bl.total_kl(st), float(shape.batch))
    add(f"{m} split keys", natural._user_step(loss, tx), (v["params"], tx.init(v["params"]), jax.random.PRNGKey(0)))
    def loss_nokl(p, x, y, k, mod=mod, rest=rest):  # no sow/mutable: KL not collected (cost of the KL path)
        out = mod.apply({"params": p, **rest}, x, k)
        return jnp.mean(bl.gaussian_nll(y, out, NOISE_VAR))
    add(f"{m} no KL", natural._user_step(loss_nokl, tx), (v["params"], tx.init(v["params"]), jax.random.PRNGKey(0)))
t = timing.time_interleaved(calls, budget_s=float(sys.argv[1]) if len(sys.argv) > 1 else 25.0, min_repeats=7, max_repeats=200)
for n, v in t.items():
    print(f"{n:20s} {v.median_s*1e3:8.3f} ms  x base {v.median_s / t[n.split()[0] + ' base (AOT)'].median_s:.3f}  reps {v.repeats}")
