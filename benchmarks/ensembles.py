"""Ensembles: one vectorized call of ``size`` members against the members called one by one.

For one method at one shape, :func:`bench_ensemble` builds
``bayeslayers_jax.Ensemble(network, size)`` (:func:`benchmarks.models.build_network` with
``ensemble_size``), compiles its forward pass and its train step (the loss is the sum over
members of each member's loss, one Adam over the stacked parameters), and times, interleaved:

* forward: the ensemble's one call against ``size`` calls of the single network's compiled
  forward, one per member's variables (sliced from the ensemble's);
* train: the ensemble's train step against ``size`` single-network train steps (one per
  member, each with its own optimizer state), and against one single-network train step
  (so ``vmapped / one`` says what ``size`` members cost relative to one).

Calls of the separate loop are dispatched back to back, as a user's Python loop would be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks import models, timing
from benchmarks.flops import Shape

__all__ = ["bench_ensemble"]


def bench_ensemble(
    net: models.Network,
    shape: Shape,
    size: int,
    data: tuple[jax.Array, jax.Array],
    tx: optax.GradientTransformation,
    keys: tuple[jax.Array, jax.Array, jax.Array],
    time_group: Callable[[dict[str, Callable[[], Any]]], dict[str, timing.Timing]],
) -> dict[str, Any]:
    """Times the ensemble of ``net``'s method against its members called separately.

    Args:
      net: the single network (its method, module and pure functions).
      shape: the benchmark shape.
      size: number of members.
      data: ``(x, y)``.
      tx: the optimizer.
      keys: ``(init key, forward key, train-state key)``.
      time_group: times a dict of zero-argument calls interleaved.

    Returns:
      ``{'shape', 'method', 'members', 'compile_s': {'forward', 'train'}, 'forward':
      {'vmapped_s', 'separate_s', 'speedup', ...}, 'train': {'vmapped_s', 'separate_s',
      'one_s', 'speedup', 'vmapped_over_one', ...}}``; ``speedup`` = separate / vmapped.
    """
    x, y = data
    k_net, k_fwd, k_state = keys
    ens = models.build_network(net.method, shape, k_net, ensemble_size=size)
    compile_s: dict[str, float] = {}
    start = time.perf_counter()
    ens_fwd, compile_s["forward"] = timing.compile_jitted(jax.jit(ens.forward), ens.variables, x, k_fwd)
    ens_step = models.make_train_step(ens, tx)
    ens_state0 = (ens.params, tx.init(ens.params), k_state)
    ens_train, compile_s["train"] = timing.compile_jitted(ens_step, ens_state0, ens.rest, x, y)

    # The single network's compiled functions, applied to each member's own variables.
    members = [jax.tree_util.tree_map(lambda a, i=i: a[i], ens.variables) for i in range(size)]
    single_fwd = jax.jit(net.forward).lower(members[0], x, k_fwd).compile()
    single_step = models.make_train_step(net, tx)
    rest0 = {k: v for k, v in members[0].items() if k != "params"}
    first_state = (members[0]["params"], tx.init(members[0]["params"]), k_state)
    single_train = single_step.lower(first_state, rest0, x, y).compile()
    compile_s["single"] = time.perf_counter() - start - compile_s["forward"] - compile_s["train"]
    fwd_keys = jax.random.split(k_fwd, size)

    ens_holder = {"state": jax.tree_util.tree_map(jnp.copy, ens_state0)}
    member_holders = []
    for i, variables in enumerate(members):
        params = variables["params"]
        member_holders.append({
            "state": jax.tree_util.tree_map(jnp.copy, (params, tx.init(params), jax.random.fold_in(k_state, i))),
            "rest": {k: v for k, v in variables.items() if k != "params"},
        })

    def ens_train_call() -> Any:
        ens_holder["state"], loss = ens_train(ens_holder["state"], ens.rest, x, y)
        return loss

    def member_train(h: dict[str, Any]) -> Any:
        h["state"], loss = single_train(h["state"], h["rest"], x, y)
        return loss

    fwd_t = time_group({
        "vmapped": lambda: ens_fwd(ens.variables, x, k_fwd),
        "separate": lambda: [single_fwd(v, x, k) for v, k in zip(members, fwd_keys)],
    })
    train_t = time_group({
        "vmapped": ens_train_call,
        "separate": lambda: [member_train(h) for h in member_holders],
        "one": lambda: member_train(member_holders[0]),
    })
    fv, fs = fwd_t["vmapped"], fwd_t["separate"]
    tv, ts, to = train_t["vmapped"], train_t["separate"], train_t["one"]
    return {
        "shape": shape.name, "method": net.method, "members": size, "compile_s": compile_s,
        "forward": {"vmapped_s": fv.median_s, "separate_s": fs.median_s,
                    "speedup": fs.median_s / fv.median_s,
                    "timing_vmapped": fv.as_dict(), "timing_separate": fs.as_dict()},
        "train": {"vmapped_s": tv.median_s, "separate_s": ts.median_s, "one_s": to.median_s,
                  "speedup": ts.median_s / tv.median_s, "vmapped_over_one": tv.median_s / to.median_s,
                  "timing_vmapped": tv.as_dict(), "timing_separate": ts.as_dict(),
                  "timing_one": to.as_dict()},
    }
