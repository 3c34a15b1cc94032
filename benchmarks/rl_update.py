r"""The reinforcement-learning scenario: one Soft Actor-Critic update with an ensemble of critics.

What a user of this package runs in an agent's inner loop, in one ``jax.jit`` (state donated):

1. **Target**: ``a' ~ pi(s')`` from the tanh-Gaussian actor, the target critics' values
   (CLT: the mean, :func:`bayeslayers_jax.value_bound` with ``beta = 0``; LR: one sample),
   the minimum over members (clipped double Q generalized to ``M`` critics), and

   .. math::
       y = r + \gamma\,(1 - d)\,\bigl(\min_m Q'_m(s', a') - \alpha \log\pi(a' \mid s')\bigr),

   under ``stop_gradient``.
2. **Critic loss**: the sum over members of each member's negative ELBO per example:
   the Gaussian NLL of ``y`` (noise variance :data:`NOISE_VAR`; the closed-form expected NLL
   for CLT's ``(mean, var)``) averaged over the batch, plus the member's KL over ``N =``
   :data:`NUM_TRAIN` (the replay-buffer size); for Dense critics the NLL alone.
3. **Actor loss**: ``mean(alpha * log pi(a|s) - min_m Q_m(s, a))`` with ``a ~ pi(s)``
   reparameterized, the gradient flowing through the critics into the actor (the critics'
   parameters held fixed).
4. ``optax.adam`` on the critics and on the actor; the target critics follow with
   ``optax.incremental_update`` (Polyak averaging, ``tau`` = :data:`TAU`).

The critics are ``bayeslayers_jax.Ensemble(bayeslayers_jax.BayesianCritic(...), M)`` for
``'clt'`` and ``'lr'`` and ``Ensemble`` of a plain ``flax.linen.Dense`` critic for the
``'dense'`` baseline (a deep ensemble); the actor is the same Dense network for all.
Timed with the three critic types interleaved per ``(members, width)``; the reported ratio
is the update time over the Dense-critic update's.

References:
  Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications"; Fujimoto et al.
  2018, "Addressing Function Approximation Error in Actor-Critic Methods" (clipped double
  Q); Chen et al. 2021, "Randomized Ensembled Double Q-Learning".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks import timing

__all__ = [
    "CRITICS",
    "DenseCritic",
    "TanhGaussianActor",
    "build_update",
    "run_rl_updates",
]

#: Critic types, the Dense baseline first.
CRITICS = ("dense", "lr", "clt")
#: HalfCheetah-like dimensions (critic input 23, close to the RL shape's 24).
OBS_DIM, ACT_DIM = 17, 6
BATCH = 256
ACTOR_WIDTH = 256
GAMMA, TAU, ALPHA = 0.99, 0.005, 0.2
#: Replay-buffer size: the ``N`` that divides the KL in the critics' ELBO.
NUM_TRAIN = 100_000
#: Observation-noise variance of the critics' Gaussian likelihood of the TD target.
NOISE_VAR = 1.0


class DenseCritic(nn.Module):
    """The baseline critic: ``Q(s, a)`` = a ``flax.linen.Dense`` ReLU MLP on ``[s, a]``, shape ``(B,)``.

    Attributes:
      features: hidden widths.
    """

    features: Sequence[int]

    @nn.compact
    def __call__(self, state: jax.Array, action: jax.Array) -> jax.Array:
        h = jnp.concatenate([state, action], axis=-1)
        for width in self.features:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(1)(h)[..., 0]


class TanhGaussianActor(nn.Module):
    """SAC's policy: a Dense MLP giving a Gaussian squashed by ``tanh``.

    ``__call__(state, key) -> (action, log_prob)`` with the reparameterized sample and its
    log-density including the ``tanh`` change of variables,
    ``log(1 - tanh(u)**2) = 2 * (log 2 - u - softplus(-2 u))``.

    Attributes:
      act_dim: action dimension.
      width: hidden width (two hidden layers).
    """

    act_dim: int
    width: int = ACTOR_WIDTH

    @nn.compact
    def __call__(self, state: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(nn.Dense(self.width)(state))
        h = nn.relu(nn.Dense(self.width)(h))
        mean, log_std = jnp.split(nn.Dense(2 * self.act_dim)(h), 2, axis=-1)
        log_std = jnp.clip(log_std, -5.0, 2.0)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        u = mean + jnp.exp(log_std) * eps
        log_prob = jnp.sum(
            -0.5 * eps**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
            - 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)),
            axis=-1,
        )
        return jnp.tanh(u), log_prob


def _critic_module(critic: str, width: int, members: int) -> nn.Module:
    from bayeslayers_jax import BayesianCritic, Ensemble  # the ensembles feature

    if critic == "dense":
        member: nn.Module = DenseCritic(features=(width, width))
    else:
        member = BayesianCritic(features=(width, width), layer_type=critic)
    return Ensemble(member, members)


def build_update(critic: str, members: int, width: int, key: jax.Array
                 ) -> tuple[Callable[..., Any], Any, Any]:
    """The jitted SAC update of one configuration, its initial state and a batch.

    Args:
      critic: ``'dense'``, ``'lr'`` or ``'clt'``.
      members: number of critics.
      width: hidden width of each critic (two hidden layers).
      key: PRNG key.

    Returns:
      ``(update, state, batch)``: ``update(state, batch) -> (state, (critic_loss,
      actor_loss))`` with ``state`` donated; ``batch = (s, a, r, s', done)``.
    """
    from bayeslayers_jax import expected_gaussian_nll, gaussian_nll, total_kl, value_bound

    if critic not in CRITICS:
        raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
    sampling = critic == "lr"
    critics = _critic_module(critic, width, members)
    actor = TanhGaussianActor(ACT_DIM)
    ks = jax.random.split(key, 8)
    s = jax.random.normal(ks[0], (BATCH, OBS_DIM))
    a = jnp.tanh(jax.random.normal(ks[1], (BATCH, ACT_DIM)))
    r = jax.random.normal(ks[2], (BATCH,))
    s2 = jax.random.normal(ks[3], (BATCH, OBS_DIM))
    done = (jax.random.uniform(ks[4], (BATCH,)) < 0.01).astype(jnp.float32)
    batch = (s, a, r, s2, done)
    critic_vars = jax.jit(critics.init)({"params": ks[5], "sample": ks[6]}, s, a)
    critic_vars = {k: v for k, v in critic_vars.items() if k != "kl"}
    critic_rest = {k: v for k, v in critic_vars.items() if k != "params"}
    actor_params = jax.jit(actor.init)(ks[7], s, ks[7])["params"]
    tx = optax.adam(3e-4)

    def q_values(params: Any, state: jax.Array, action: jax.Array, k: jax.Array, kl: bool) -> Any:
        rngs = {"sample": k} if sampling else None
        variables = {"params": params, **critic_rest}
        if kl:
            return critics.apply(variables, state, action, rngs=rngs, mutable=["kl"])
        return critics.apply(variables, state, action, rngs=rngs)

    def member_nll(q: Any, y: jax.Array) -> jax.Array:
        if isinstance(q, tuple):
            return jnp.mean(expected_gaussian_nll(y, q[0], q[1], NOISE_VAR))
        return jnp.mean(gaussian_nll(y, q, NOISE_VAR))

    def critic_loss(params: Any, state: jax.Array, action: jax.Array, y: jax.Array, k: jax.Array
                    ) -> jax.Array:
        q, coll = q_values(params, state, action, k, kl=True)
        nll = jnp.sum(jax.vmap(member_nll, in_axes=(0, None))(q, y))
        if critic == "dense":
            return nll
        return nll + total_kl(coll) / NUM_TRAIN

    def actor_loss(actor_p: Any, critic_p: Any, state: jax.Array, k: jax.Array) -> jax.Array:
        k_pi, k_q = jax.random.split(k)
        action, log_prob = actor.apply({"params": actor_p}, state, k_pi)
        q = value_bound(q_values(critic_p, state, action, k_q, kl=False))
        return jnp.mean(ALPHA * log_prob - jnp.min(q, axis=0))

    def update(train_state: Any, data: Any) -> Any:
        critic_p, target_p, actor_p, critic_opt, actor_opt, k = train_state
        state, action, reward, next_state, dn = data
        k, k_next, k_target, k_critic, k_actor = jax.random.split(k, 5)
        next_action, next_log_prob = actor.apply({"params": actor_p}, next_state, k_next)
        q_next = value_bound(q_values(target_p, next_state, next_action, k_target, kl=False))
        y = jax.lax.stop_gradient(
            reward + GAMMA * (1.0 - dn) * (jnp.min(q_next, axis=0) - ALPHA * next_log_prob))
        c_loss, c_grads = jax.value_and_grad(critic_loss)(critic_p, state, action, y, k_critic)
        c_updates, critic_opt = tx.update(c_grads, critic_opt, critic_p)
        critic_p = optax.apply_updates(critic_p, c_updates)
        a_loss, a_grads = jax.value_and_grad(actor_loss)(
            actor_p, jax.lax.stop_gradient(critic_p), state, k_actor)
        a_updates, actor_opt = tx.update(a_grads, actor_opt, actor_p)
        actor_p = optax.apply_updates(actor_p, a_updates)
        target_p = optax.incremental_update(critic_p, target_p, TAU)
        return (critic_p, target_p, actor_p, critic_opt, actor_opt, k), (c_loss, a_loss)

    params = critic_vars["params"]
    state0 = (params, jax.tree_util.tree_map(jnp.copy, params), actor_params, tx.init(params),
              tx.init(actor_params), ks[0])
    return jax.jit(update, donate_argnums=(0,)), state0, batch


def run_rl_updates(
    *,
    critics: Sequence[str],
    members: Sequence[int],
    widths: Sequence[int],
    time_group: Callable[[dict[str, Callable[[], Any]]], dict[str, timing.Timing]],
    progress: Any,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Times the SAC update for every ``(members, width)``, the critic types interleaved.

    Args:
      critics: critic types, ``'dense'`` first (the baseline of the ratios).
      members: ensemble sizes.
      widths: hidden widths.
      time_group: times a dict of zero-argument calls interleaved.
      progress: the suite's progress reporter (``step``, ``note``, ``out_of_time``).
      seed: PRNG seed.

    Returns:
      One record per ``(critic, members, width)`` with ``median_s``, ``compile_s``,
      ``ratio_to_dense``, ``losses_finite``, or ``skipped``.
    """
    out: list[dict[str, Any]] = []
    key = jax.random.PRNGKey(seed)
    for m in members:
        for w in widths:
            reason = progress.out_of_time()
            if reason:
                out += [{"critic": c, "members": m, "width": w, "skipped": reason} for c in critics]
                progress.step(f"SAC update x{m} critics, {w} wide: {reason}")
                continue
            calls: dict[str, Callable[[], Any]] = {}
            compile_s: dict[str, float] = {}
            holders: dict[str, dict[str, Any]] = {}
            for c in critics:
                update, state, batch = build_update(c, m, w, key)
                compiled, compile_s[c] = timing.compile_jitted(update, state, batch)
                holders[c] = {"state": state, "losses": None}

                def call(f: Any = compiled, h: dict[str, Any] = holders[c], b: Any = batch) -> Any:
                    h["state"], h["losses"] = f(h["state"], b)
                    return h["losses"]

                calls[c] = call
            t = time_group(calls)
            base = t[critics[0]].median_s
            for c in critics:
                losses = [float(v) for v in holders[c]["losses"]]
                out.append({
                    "critic": c, "members": m, "width": w, "median_s": t[c].median_s,
                    "ratio_to_dense": t[c].median_s / base, "compile_s": compile_s[c],
                    "timing": t[c].as_dict(),
                    "losses_finite": all(math.isfinite(v) for v in losses),
                })
            progress.step(f"SAC update x{m} critics, {w} wide: " + ", ".join(
                f"{c} {t[c].median_s * 1e3:.3f} ms ({t[c].median_s / base:.2f}x)" for c in critics))
    return out
