r"""Soft Actor-Critic on gymnasium's ``Pendulum-v1`` with an ensemble of Bayesian critics.

Run ``python examples/sac_pendulum.py --method clt --steps 12000 --seed 0 --out run.json``
(``pip install "bayeslayers-jax[rl]"`` for gymnasium). Methods:

* ``clt`` (default): an :class:`~bayeslayers_jax.Ensemble` of ``--critics`` sampling-free
  :class:`~bayeslayers_jax.BayesianCritic` s: every Q is a Gaussian ``(mean, var)``;
* ``lr``: the same with local-reparameterization critics (one noise draw per forward pass);
* ``dense``: the deterministic baseline, an ensemble of plain ``flax.linen.Dense`` critics.

The critic loss is this package's negative ELBO per training example
(:func:`~bayeslayers_jax.elbo_loss`) against the soft TD target, for all methods (for
``dense`` the KL is 0 and the loss is ``0.5 * TD^2 / noise_var`` plus a constant: standard
SAC):

.. math::
    y = r + \gamma\,(1 - d)\,\Big(\min_m Q^{\text{targ}}_{m,\beta}(s', a') - \alpha\log\pi(a'|s')\Big),
    \qquad
    \mathcal{L}_{\text{critic}} = \sum_m \Big[\tfrac{1}{B}\sum_i
    \mathbb{E}_{q_m}\big[-\log\mathcal{N}(y_i \mid Q_m(s_i, a_i), s^2)\big]
    + \frac{\mathrm{KL}(q_m\,\|\,p)}{N}\Big]

with ``Q_beta = mean + beta * std`` (:func:`~bayeslayers_jax.value_bound`, ``--beta``, default 0).
The documented choices:

* ``N`` (``num_train_examples``) is the replay-buffer capacity, here the number of
  environment steps of the run (nothing is evicted), i.e. the ELBO of the final data set.
  It stays fixed, so the KL weight per example is ``1 / N`` from the first update on; a
  smaller ``N`` (e.g. the transitions collected so far) regularizes the early critics much
  more strongly.
* ``noise_var = 1`` (``--noise-var``): the expected NLL is then ``0.5 * (TD^2 + var)`` plus a
  constant, the same scale as the usual SAC critic loss, so Adam's learning rate transfers
  from the deterministic baseline. Relative to the TD error's scale it sets how much the data
  outweigh the KL: a ``noise_var`` far above the squared TD errors lets the KL pull the
  posterior to the prior.
* The prior is ``N(0, prior_std^2)`` with ``prior_std = 0.1`` (``--prior-std``), about
  ``1 / sqrt(fan_in)`` of the hidden layers: the scale the weights have anyway. A prior std of
  1 gives initial KLs tens of times larger and posterior stds that make Q's variance explode
  in a wide network.

Target networks follow by Polyak averaging with :func:`optax.incremental_update`; one
``jax.jit`` holds the whole update (target, critic ELBO step, actor step through the critic,
temperature step, target update). Progress is printed; ``--out`` writes the results as JSON.

References:
  Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (automatic
  temperature); Blundell et al. 2015 (ELBO); Wu et al. 2019 (CLT moment propagation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayeslayers_jax import BayesianCritic, Ensemble, elbo_loss, value_bound

METHODS = ("clt", "lr", "dense")
ACTION_SCALE = 2.0  # Pendulum-v1 torques lie in [-2, 2]
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class DenseCritic(nn.Module):
    """The deterministic baseline: ``Q(s, a)`` of shape ``(B,)`` from a ReLU MLP."""

    features: tuple[int, ...] = (128, 128)

    @nn.compact
    def __call__(self, state, action):
        h = jnp.concatenate([state, action], axis=-1)
        for width in self.features:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(1)(h)[..., 0]


class Actor(nn.Module):
    """A tanh-squashed Gaussian policy."""

    action_dim: int
    features: tuple[int, ...] = (128, 128)

    @nn.compact
    def __call__(self, state):
        h = state
        for width in self.features:
            h = nn.relu(nn.Dense(width)(h))
        mean = nn.Dense(self.action_dim)(h)
        log_std = jnp.clip(nn.Dense(self.action_dim)(h), LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


def sample_action(actor, params, state, key):
    """A reparameterized tanh-Gaussian action in ``[-2, 2]`` and its log density."""
    mean, log_std = actor.apply(params, state)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    pre = mean + jnp.exp(log_std) * eps
    action = jnp.tanh(pre)
    log_prob = jnp.sum(
        -0.5 * jnp.square(eps) - log_std - 0.5 * jnp.log(2 * jnp.pi)
        - jnp.log(ACTION_SCALE * (1 - jnp.square(action)) + 1e-6),
        axis=-1,
    )
    return ACTION_SCALE * action, log_prob


class Config(NamedTuple):
    method: str = "clt"
    steps: int = 12000
    seed: int = 0
    critics: int = 2
    hidden: int = 128
    batch_size: int = 256
    start_steps: int = 1000
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    noise_var: float = 1.0
    prior_std: float = 0.1
    beta: float = 0.0
    eval_episodes: int = 5
    log_every: int = 1000


class Agent(NamedTuple):
    actor: Any
    critic: Any
    update: Any
    act: Any
    act_greedy: Any
    critic_others: Any  # the critic's non-trainable collections ('prior')


def make_critic(method: str, hidden: int, critics: int, prior_std: float):
    """The critic ensemble of one method (``(members, B)`` outputs)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "dense":
        member = DenseCritic((hidden, hidden))
    else:
        member = BayesianCritic((hidden, hidden), layer_type=method, prior_std=prior_std)
    return Ensemble(member, critics)


def init_state(cfg: Config, obs_dim: int, action_dim: int, key):
    """The actor, critics, targets, temperature and their optimizer states."""
    actor = Actor(action_dim, (cfg.hidden, cfg.hidden))
    critic = make_critic(cfg.method, cfg.hidden, cfg.critics, cfg.prior_std)
    k_actor, k_critic = jax.random.split(key)
    s, a = jnp.zeros((1, obs_dim), jnp.float32), jnp.zeros((1, action_dim), jnp.float32)
    actor_params = actor.init(k_actor, s)
    critic_vars = critic.init(k_critic, s, a)
    opt = optax.adam(cfg.lr)
    state = {
        "actor": actor_params,
        "critic": critic_vars["params"],
        "target": critic_vars["params"],
        "log_alpha": jnp.zeros((), jnp.float32),
        "opt_actor": opt.init(actor_params),
        "opt_critic": opt.init(critic_vars["params"]),
        "opt_alpha": opt.init(jnp.zeros((), jnp.float32)),
    }
    others = {name: col for name, col in critic_vars.items() if name != "params"}  # 'prior'
    return actor, critic, others, opt, state


def make_agent(cfg: Config, obs_dim: int, action_dim: int, key):
    """Builds the networks and the jitted update; returns ``(agent, state)``."""
    actor, critic, others, opt, state = init_state(cfg, obs_dim, action_dim, key)
    target_entropy = -float(action_dim)

    def q_values(params, s, a, key):
        return critic.apply({**others, "params": params}, s, a, rngs={"sample": key})

    def update(state, batch, key):
        s, a, r, s2, done = batch
        k_next, k_target, k_critic, k_pi, k_q = jax.random.split(key, 5)
        alpha = jnp.exp(state["log_alpha"])
        # Soft TD target from the target critics (min over members of mean + beta * std).
        a2, logp2 = sample_action(actor, state["actor"], s2, k_next)
        q_next = value_bound(q_values(state["target"], s2, a2, k_target), cfg.beta).min(axis=0)
        y = jax.lax.stop_gradient(r + cfg.gamma * (1 - done) * (q_next - alpha * logp2))

        def critic_loss(params):
            return elbo_loss(critic, {**others, "params": params}, (s, a), y,
                             num_train_examples=cfg.steps, key=k_critic, noise_var=cfg.noise_var)

        (c_loss, aux), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(state["critic"])
        c_updates, opt_critic = opt.update(c_grads, state["opt_critic"])
        critic_params = optax.apply_updates(state["critic"], c_updates)

        def actor_loss(params):
            a_new, logp = sample_action(actor, params, s, k_pi)
            q = value_bound(q_values(critic_params, s, a_new, k_q), cfg.beta).min(axis=0)
            return jnp.mean(alpha * logp - q), logp

        (a_loss, logp), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(state["actor"])
        a_updates, opt_actor = opt.update(a_grads, state["opt_actor"])
        actor_params = optax.apply_updates(state["actor"], a_updates)

        def alpha_loss(log_alpha):
            return -log_alpha * jnp.mean(jax.lax.stop_gradient(logp) + target_entropy)

        al_grad = jax.grad(alpha_loss)(state["log_alpha"])
        al_update, opt_alpha = opt.update(al_grad, state["opt_alpha"])
        new_state = {
            "actor": actor_params,
            "critic": critic_params,
            "target": optax.incremental_update(critic_params, state["target"], cfg.tau),
            "log_alpha": optax.apply_updates(state["log_alpha"], al_update),
            "opt_actor": opt_actor,
            "opt_critic": opt_critic,
            "opt_alpha": opt_alpha,
        }
        metrics = {"critic_loss": c_loss, "nll": aux["nll"], "kl": aux["kl"], "actor_loss": a_loss,
                   "alpha": alpha, "td_target_mean": jnp.mean(y)}
        return new_state, metrics

    def act(actor_params, s, key):
        return sample_action(actor, actor_params, s[None], key)[0][0]

    def act_greedy(actor_params, s):
        return ACTION_SCALE * jnp.tanh(actor.apply(actor_params, s[None])[0][0])

    agent = Agent(actor, critic, jax.jit(update), jax.jit(act), jax.jit(act_greedy), others)
    return agent, state


class Replay:
    """A fixed-capacity replay buffer of NumPy arrays."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        self.s = np.zeros((capacity, obs_dim), np.float32)
        self.a = np.zeros((capacity, action_dim), np.float32)
        self.r = np.zeros((capacity,), np.float32)
        self.s2 = np.zeros((capacity, obs_dim), np.float32)
        self.d = np.zeros((capacity,), np.float32)
        self.size, self.capacity, self.pos = 0, capacity, 0

    def add(self, s, a, r, s2, d):
        i = self.pos
        self.s[i], self.a[i], self.r[i], self.s2[i], self.d[i] = s, a, r, s2, d
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch_size: int):
        idx = rng.integers(0, self.size, batch_size)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.d[idx]


def evaluate(env, agent, actor_params, episodes: int, seed: int) -> list[float]:
    """Returns of the deterministic (mean) policy."""
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            action = np.asarray(agent.act_greedy(actor_params, jnp.asarray(obs, jnp.float32)))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def train(cfg: Config, verbose: bool = True) -> dict[str, Any]:
    """Trains SAC on Pendulum-v1 and returns the results (episode returns, timings, config)."""
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    eval_env = gym.make("Pendulum-v1")
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    key = jax.random.key(cfg.seed)
    key, k_init = jax.random.split(key)
    agent, state = make_agent(cfg, obs_dim, action_dim, k_init)
    replay = Replay(cfg.steps, obs_dim, action_dim)
    rng = np.random.default_rng(cfg.seed)
    obs, _ = env.reset(seed=cfg.seed)
    env.action_space.seed(cfg.seed)
    episode_returns, episode_return = [], 0.0
    update_seconds, metrics = [], None
    t_start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        if step <= cfg.start_steps:
            action = env.action_space.sample()
        else:
            key, k_act = jax.random.split(key)
            action = np.asarray(agent.act(state["actor"], jnp.asarray(obs, jnp.float32), k_act))
        obs2, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, action, reward, obs2, float(terminated))
        episode_return += float(reward)
        obs = obs2
        if terminated or truncated:
            episode_returns.append(episode_return)
            episode_return = 0.0
            obs, _ = env.reset()
        if step > cfg.start_steps:
            key, k_up = jax.random.split(key)
            batch = tuple(jnp.asarray(b) for b in replay.sample(rng, cfg.batch_size))
            t0 = time.perf_counter()
            state, metrics = agent.update(state, batch, k_up)
            jax.block_until_ready(state["log_alpha"])
            update_seconds.append(time.perf_counter() - t0)
        if verbose and step % cfg.log_every == 0:
            recent = episode_returns[-5:]
            line = f"[{cfg.method} seed {cfg.seed}] step {step:6d}  episodes {len(episode_returns):3d}"
            if recent:
                line += f"  return(last 5) {np.mean(recent):8.1f}"
            if metrics is not None:
                line += (f"  nll {float(jnp.mean(metrics['nll'])):8.3f}  kl/N "
                         f"{float(jnp.mean(metrics['kl'])) / cfg.steps:7.3f}  alpha {float(metrics['alpha']):.3f}")
            if update_seconds:
                line += f"  {1e3 * statistics.median(update_seconds[1:] or update_seconds):.2f} ms/update"
            print(line, flush=True)
    eval_returns = evaluate(eval_env, agent, state["actor"], cfg.eval_episodes, 10_000 + cfg.seed)
    q_uncertainty = critic_uncertainty(agent, state["critic"], replay)
    return {
        "config": cfg._asdict(),
        "episode_returns": episode_returns,
        "last10_return": float(np.mean(episode_returns[-10:])),
        "eval_returns": eval_returns,
        "eval_return": float(np.mean(eval_returns)),
        "ms_per_update_median": 1e3 * statistics.median(update_seconds[1:]) if len(update_seconds) > 1 else None,
        "wall_seconds": time.perf_counter() - t_start,
        "q_uncertainty": q_uncertainty,
        "final_metrics": None if metrics is None else {
            k: np.asarray(v).tolist() for k, v in metrics.items()},
    }


def critic_uncertainty(agent, critic_params, replay, num: int = 1024, num_samples: int = 64):
    """Medians over ``num`` replayed ``(s, a)`` of the critics' epistemic std and spread.

    ``median_std``: the std of Q within one critic (its weight posterior; CLT in closed form,
    LR from ``num_samples`` draws, 0 for Dense), averaged over the critics as a variance;
    ``member_spread``: the std of the critics' means around their average;
    ``median_abs_mean``: the scale of Q itself.
    """
    s, a, *_ = replay.sample(np.random.default_rng(1), num)
    s, a = jnp.asarray(s), jnp.asarray(a)
    variables = {"params": critic_params, **agent.critic_others}
    out = agent.critic.apply(variables, s, a, rngs={"sample": jax.random.key(0)})
    if isinstance(out, tuple):  # CLT: (mean, var) per critic
        means, variances = out
    else:
        keys = jax.random.split(jax.random.key(0), num_samples)
        draws = jax.vmap(lambda k: agent.critic.apply(variables, s, a, rngs={"sample": k}))(keys)
        means, variances = jnp.mean(draws, axis=0), jnp.var(draws, axis=0)  # 0 for Dense
    mixture_mean = jnp.mean(means, axis=0)
    return {"median_std": float(jnp.median(jnp.sqrt(jnp.mean(variances, axis=0)))),
            "member_spread": float(jnp.median(jnp.std(means, axis=0))),
            "median_abs_mean": float(jnp.median(jnp.abs(mixture_mean)))}


def time_updates(hidden: int = 128, critics: int = 2, repeats: int = 30, batch_size: int = 256,
                 methods=METHODS) -> dict[str, Any]:
    """Milliseconds per jitted SAC update of each method, measured interleaved in one process.

    The methods' updates are called in turn (``dense``, ``clt``, ``lr``, ``dense``, ...) on
    the same random batch, so machine load affects them alike; each ratio is the median over
    ``repeats`` rounds of (method time / dense time) in the same round.
    """
    obs_dim, action_dim = 3, 1
    rng = np.random.default_rng(0)
    batch = (jnp.asarray(rng.normal(size=(batch_size, obs_dim)), jnp.float32),
             jnp.asarray(rng.uniform(-2, 2, (batch_size, action_dim)), jnp.float32),
             jnp.asarray(rng.normal(size=batch_size), jnp.float32),
             jnp.asarray(rng.normal(size=(batch_size, obs_dim)), jnp.float32),
             jnp.zeros(batch_size, jnp.float32))
    agents = {}
    for method in methods:
        cfg = Config(method=method, hidden=hidden, critics=critics, batch_size=batch_size)
        agent, state = make_agent(cfg, obs_dim, action_dim, jax.random.key(0))
        state, _ = agent.update(state, batch, jax.random.key(1))  # compile
        jax.block_until_ready(state["log_alpha"])
        agents[method] = (agent, state)
    times = {m: [] for m in methods}
    for i in range(repeats):
        for method in methods:
            agent, state = agents[method]
            t0 = time.perf_counter()
            for _ in range(5):
                state, _ = agent.update(state, batch, jax.random.key(i))
            jax.block_until_ready(state["log_alpha"])
            times[method].append((time.perf_counter() - t0) / 5)
            agents[method] = (agent, state)
    result = {"hidden": hidden, "critics": critics, "batch_size": batch_size, "repeats": repeats,
              "ms_per_update": {m: 1e3 * statistics.median(t) for m, t in times.items()}}
    if "dense" in methods:
        result["ratio_to_dense"] = {
            m: statistics.median(t / d for t, d in zip(times[m], times["dense"])) for m in methods}
    return result


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=METHODS, default="clt")
    parser.add_argument("--steps", type=int, default=12000, help="environment steps (also N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--critics", type=int, default=2, help="ensemble members")
    parser.add_argument("--hidden", type=int, default=128, help="hidden width of actor and critics")
    parser.add_argument("--start-steps", type=int, default=1000, help="random actions before learning")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--noise-var", type=float, default=1.0)
    parser.add_argument("--prior-std", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.0, help="Q = mean + beta * std (negative: pessimistic)")
    parser.add_argument("--log-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--time-updates", action="store_true",
                        help="only time the three methods' updates, interleaved in this process")
    parser.add_argument("--out", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.time_updates:
        result = time_updates(hidden=args.hidden, critics=args.critics, batch_size=args.batch_size)
        print(json.dumps(result, indent=1))
    else:
        cfg = Config(method=args.method, steps=args.steps, seed=args.seed, critics=args.critics,
                     hidden=args.hidden, batch_size=args.batch_size,
                     start_steps=min(args.start_steps, args.steps), noise_var=args.noise_var,
                     prior_std=args.prior_std, beta=args.beta, eval_episodes=args.eval_episodes,
                     log_every=args.log_every)
        result = train(cfg)
        print(f"[{cfg.method} seed {cfg.seed}] last-10 return {result['last10_return']:.1f}, "
              f"eval return {result['eval_return']:.1f}, "
              f"{result['ms_per_update_median']} ms/update", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
