"""Markdown tables from the JSON results of ``examples/sac_pendulum.py``.

``python examples/sac_results_table.py examples/results`` prints the returns per method and
seed (from ``sac_pendulum_<method>_seed<k>.json``) and the interleaved update timings (from
``sac_pendulum_timing_<width>.json``, written by ``sac_pendulum.py --time-updates``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

METHOD_NAMES = {"dense": "Dense (deterministic)", "clt": "CLT (sampling-free)", "lr": "LR (local reparam.)"}


def returns_table(folder: str) -> str:
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "sac_pendulum_*_seed*.json"))):
        match = re.search(r"sac_pendulum_(\w+)_seed(\d+)\.json$", path)
        with open(path) as f:
            runs[(match.group(1), int(match.group(2)))] = json.load(f)
    lines = ["| critic | seed | last-10 training return | evaluation return (5 episodes) | "
             "median ms/update in the run | median Q std | median member spread | median abs(Q) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method in METHOD_NAMES:
        for (m, seed), r in sorted(runs.items()):
            if m != method:
                continue
            q = r.get("q_uncertainty")
            spread = (" - | - | - |" if not q else
                      f" {q['median_std']:.2f} | {q['member_spread']:.2f} | {q['median_abs_mean']:.1f} |")
            lines.append(f"| {METHOD_NAMES[m]} | {seed} | {r['last10_return']:.1f} | "
                         f"{r['eval_return']:.1f} | {r['ms_per_update_median']:.1f} |{spread}")
    return "\n".join(lines)


def timing_table(folder: str) -> str:
    lines = ["| width | critics | Dense ms/update | CLT / Dense | LR / Dense |", "|---:|---:|---:|---:|---:|"]
    for path in sorted(glob.glob(os.path.join(folder, "sac_pendulum_timing_*.json"))):
        with open(path) as f:
            t = json.load(f)
        ratio = t["ratio_to_dense"]
        lines.append(f"| {t['hidden']} | {t['critics']} | {t['ms_per_update']['dense']:.2f} | "
                     f"{ratio['clt']:.2f}x | {ratio['lr']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
    print(returns_table(folder))
    print()
    print(timing_table(folder))
