"""Report writing: Markdown tables for the console and the results file, and the JSON dump."""

from __future__ import annotations

import json
import os
from typing import Any

from benchmarks.suite import device_slug

__all__ = ["markdown_report", "result_stem", "write_results"]

_NAMES = {"dense": "Dense", "map": "MAP", "bbb": "BBB", "lr": "LR", "clt": "CLT", "cltdet": "CLTDet"}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _target_text(t: dict[str, Any]) -> str:
    what = f"{t['platform'].upper()} {t['shape']}: {_NAMES[t['method']]} {t['mode']} step"
    if t["kind"] == "ratio":
        return f"{what} <= {t['limit']:g}x Dense"
    return f"{what} >= {t['limit']:g}x faster than PyTorch eager"


def markdown_report(results: dict[str, Any]) -> str:
    """The whole report as Markdown (also printed to the console)."""
    info = results["device"]
    meta = results["meta"]
    cfg = results["config"]
    out = [
        f"# bayeslayers_jax benchmarks: {info['platform']} ({info['device_kind']})",
        "",
        f"- date (UTC): {meta['started_utc']}; wall time {meta['wall_s']:.1f} s"
        + ("; **smoke run** (one repeat, not a measurement)" if cfg["smoke"] else ""),
        f"- device: {info['platform']} `{info['device_kind']}` x{info['device_count']}; host "
        f"`{info['processor']}`, {info['cpu_count']} CPUs",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- protocol: {meta['dtype']}, ahead-of-time compiled, one warm-up call excluded, median "
        f"of {cfg['min_repeats']}..{cfg['max_repeats']} repeats within {cfg['budget_s']:g} s per "
        "measurement; all ratios against the `flax.linen.Dense` network timed in this run",
        "- FLOP limit = method matmul FLOPs / Dense matmul FLOPs (see `benchmarks/flops.py`); "
        "`vs limit` = (time ratio) / (FLOP limit): 1.00x means the method runs at its FLOP limit",
        "",
    ]
    for name, shape in results["shapes"].items():
        out += [f"## {shape['description']} ({name}): {shape['label']}", ""]
        rows = []
        recs = {(r["method"], r["mode"]): r for r in results["records"] if r["shape"] == name}
        for method in _NAMES:
            if (method, "forward") not in recs:
                continue
            f, t = recs[(method, "forward")], recs[(method, "train")]
            rows.append([
                _NAMES[method],
                _ms(f["median_s"]), _x(f["ratio_to_dense"]), _x(f["flop_ratio"]), _x(f["vs_flop_limit"]),
                _ms(t["median_s"]), _x(t["ratio_to_dense"]), _x(t["flop_ratio"]), _x(t["vs_flop_limit"]),
                f"{t['gflops_per_s']:.1f}",
                f"{f['compile_s']:.2f} / {t['compile_s']:.2f}",
                _mib((t["memory"] or {}).get("total_bytes")),
            ])
        out += _table(
            ["method", "forward ms", "x Dense", "FLOP limit", "vs limit",
             "train step ms", "x Dense", "FLOP limit", "vs limit", "train GFLOP/s",
             "compile s (fwd / train)", "train step MiB (XLA)"],
            rows,
        )
        out.append("")
    if results["targets"]:
        out += ["## Targets", ""]
        rows = []
        for t in results["targets"]:
            measured = "-" if t["measured"] is None else f"{t['measured']:.2f}x"
            met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            rows.append([_target_text(t), measured, met])
        out += _table(["target", "measured", "status"], rows) + [""]
    else:
        out += ["## Targets", "", f"No targets are defined for platform `{info['platform']}`.", ""]
    out += ["## Monte Carlo predictive (vmapped over keys)", ""]
    rows = []
    for m in results["mc"]:
        if m["analytic"]:
            rows.append([m["shape"], _NAMES[m["method"]], "moments in 1 pass", _ms(m["median_s"]),
                         "-", f"{m['rows_per_s']:.3g}"])
        else:
            rows.append([m["shape"], _NAMES[m["method"]], str(m["samples"]), _ms(m["median_s"]),
                         f"{m['samples_per_s']:.1f}", f"{m['rows_per_s']:.3g}"])
    out += _table(["shape", "method", "samples per call", "ms per call", "samples/s",
                   "input rows x samples / s"], rows) + [""]
    out += ["## Ensemble of networks: vmapped over parameter sets vs separate calls (forward)", ""]
    rows = [[e["shape"], _NAMES[e["method"]], str(e["members"]), "skipped: " + e["skipped"], "-", "-"]
            if "skipped" in e else
            [e["shape"], _NAMES[e["method"]], str(e["members"]), _ms(e["vmapped_s"]),
             _ms(e["separate_s"]), _x(e["speedup"])] for e in results["ensemble"]]
    out += _table(["shape", "method", "members", "vmapped ms", "separate ms",
                   "speedup of vmap"], rows) + [""]
    out += ["## Memory", ""]
    for p in results["memory"]["process_peaks"]:
        label = {"device_peak_bytes_in_use": "device peak bytes in use",
                 "host_max_rss": "host max resident set size"}[p["kind"]]
        out.append(f"- after shape `{p['after_shape']}`: {label} {_mib(p['bytes'])} MiB")
    out += ["- per-step memory above: XLA buffer assignment of the compiled train step "
            "(arguments + outputs + temporaries - aliased donations)", ""]
    torch = results["torch"]
    out += ["## PyTorch comparison", ""]
    if torch["status"] != "ok":
        out += [f"PyTorch: {torch['status']}.", ""]
    else:
        out += [f"PyTorch {torch['version']} on `{torch['device']}` (own implementation of the "
                "same math; `torch.compile` compiles the loss, Adam stays eager)", ""]
        rows = []
        for r in torch["records"]:
            if "median_s" in r:
                rows.append([r["shape"], _NAMES[r["method"]], r["mode"], r["impl"], _ms(r["median_s"]),
                             _x(r.get("torch_over_jax"))])
            else:
                rows.append([r["shape"], _NAMES[r["method"]], r["mode"], r["impl"], r["error"], "-"])
        out += _table(["shape", "method", "mode", "torch", "torch ms", "torch / JAX time"], rows) + [""]
    return "\n".join(out)


def result_stem(results: dict[str, Any]) -> str:
    """``<device>_<YYYY-MM-DD>`` (``_smoke`` appended for smoke runs)."""
    date = results["meta"]["started_utc"][:10]
    stem = f"{device_slug(results['device'])}_{date}"
    return stem + ("_smoke" if results["config"]["smoke"] else "")


def write_results(results: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Writes ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` (created if missing).

    Returns:
      The paths of the JSON and the Markdown file.
    """
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, result_stem(results))
    with open(stem + ".json", "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")
    with open(stem + ".md", "w", encoding="utf-8") as fh:
        fh.write(markdown_report(results) + "\n")
    return stem + ".json", stem + ".md"
