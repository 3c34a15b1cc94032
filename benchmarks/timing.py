"""Timing utilities: compile separately, warm up, then the median of adaptive repeats.

Every measurement follows the same protocol:

1. ``compile_jitted`` lowers and compiles a jitted function ahead of time and reports the
   wall time of tracing + lowering + XLA compilation on its own, so compilation never leaks
   into a timing.
2. ``time_interleaved`` runs each compiled call once as warm-up (excluded; a call that
   already ran, such as a PyTorch step whose first call built it, is declared ``warm``), then picks how
   many calls make one repeat (``number``, like :mod:`timeit`'s autorange) so that a repeat
   lasts at least ``min_repeat_s``, and takes rounds of one repeat per call (round robin, so
   the compared calls share the machine's load) until ``budget_s`` is spent (at least
   ``min_repeats``, at most ``max_repeats`` rounds). Each repeat ends with
   ``jax.block_until_ready``; the reported time is the median over repeats of
   (repeat time / ``number``). Calls inside one repeat are
   dispatched back to back, as a training loop does, so asynchronous dispatch overlaps the
   Python overhead with device work exactly as it would in real use.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

__all__ = ["Timing", "compile_jitted", "time_call", "time_interleaved"]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Result of :func:`time_call`.

    Attributes:
      median_s: median seconds per call.
      min_s: fastest repeat, seconds per call.
      repeats: number of timed repeats.
      number: calls per repeat.
    """

    median_s: float
    min_s: float
    repeats: int
    number: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dictionary for JSON output."""
        return dataclasses.asdict(self)


def compile_jitted(jitted: Any, *args: Any) -> tuple[Any, float]:
    """Compiles ``jitted`` for ``args`` ahead of time.

    Args:
      jitted: a ``jax.jit``-wrapped function.
      *args: example arguments (only their shapes and dtypes matter).

    Returns:
      ``(compiled, seconds)``: the compiled executable and the trace + lower + compile time.
    """
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]],
    *,
    budget_s: float,
    min_repeats: int = 3,
    max_repeats: int = 50,
    min_repeat_s: float = 0.01,
    sync: Callable[[Any], Any] = jax.block_until_ready,
    warm: Mapping[str, float] | None = None,
) -> dict[str, Timing]:
    """Times several zero-argument calls in round robin, after one excluded warm-up each.

    Each round takes one repeat of every call in turn, so calls that are compared by a ratio
    (a method against the Dense baseline) see the same machine load; this matters on a
    shared CPU, where a slow spell would otherwise land on one method alone. A call may carry
    state between calls (a train step that updates its own parameters), so back-to-back
    calls form a realistic dependency chain.

    Args:
      calls: name -> call; a call runs the work once and returns something for ``sync``.
      budget_s: wall-time budget for all timed rounds together (warm-ups not counted).
      min_repeats: rounds taken even when the budget is spent.
      max_repeats: upper bound on rounds.
      min_repeat_s: a repeat batches calls until it lasts at least this long.
      sync: waits for a call's output to be computed (``jax.block_until_ready``).
      warm: names of calls that already ran at least once (the PyTorch steps, whose first
        call happens when they are built), mapped to the seconds that call took: they get
        no warm-up call, and that time stands in for the warm-up's in choosing ``number``.

    Returns:
      name -> :class:`Timing`.
    """
    if min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(
            f"need 1 <= min_repeats <= max_repeats, got min_repeats={min_repeats}, "
            f"max_repeats={max_repeats}"
        )
    if budget_s < 0:
        raise ValueError(f"budget_s must be >= 0, got {budget_s}")
    numbers: dict[str, int] = {}
    warm = warm or {}
    for name, call in calls.items():
        if name in warm:
            single = warm[name]
        else:
            start = time.perf_counter()
            sync(call())
            single = time.perf_counter() - start
        numbers[name] = 1
        if single < min_repeat_s:
            numbers[name] = max(1, min(1000, int(min_repeat_s / max(single, 1e-6))))
    per_call: dict[str, list[float]] = {name: [] for name in calls}
    spent = 0.0
    rounds = 0
    while rounds < max_repeats and (rounds < min_repeats or spent < budget_s):
        for name, call in calls.items():
            t0 = time.perf_counter()
            out = None
            for _ in range(numbers[name]):
                out = call()
            sync(out)
            elapsed = time.perf_counter() - t0
            spent += elapsed
            per_call[name].append(elapsed / numbers[name])
        rounds += 1
    return {
        name: Timing(
            median_s=statistics.median(times),
            min_s=min(times),
            repeats=len(times),
            number=numbers[name],
        )
        for name, times in per_call.items()
    }


def time_call(
    call: Callable[[], Any],
    *,
    budget_s: float,
    min_repeats: int = 3,
    max_repeats: int = 50,
    min_repeat_s: float = 0.01,
    sync: Callable[[Any], Any] = jax.block_until_ready,
) -> Timing:
    """Times one zero-argument ``call``: :func:`time_interleaved` with a single entry."""
    return time_interleaved(
        {"call": call},
        budget_s=budget_s,
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        min_repeat_s=min_repeat_s,
        sync=sync,
    )["call"]
