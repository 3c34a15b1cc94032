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


def _limit(value: float) -> str:
    if value < 1:
        return f"1/{round(1 / value)}"
    return f"{value:g}x"


def _target_text(t: dict[str, Any]) -> str:
    plat, kind = t["platform"].upper(), t["kind"]
    name = _NAMES[t["method"]]
    if kind == "ratio":
        return f"{plat} {t['shape']}: {name} train step <= {_limit(t['limit'])} Dense"
    if kind == "vs_objectrl":
        impl = "ObjectRL eager" if t["impl"] == "eager" else "ObjectRL + torch.compile"
        amount = "" if t["limit"] == 1 else f"{_limit(t['limit'])} of "
        return f"{plat} {t['shape']}: {name} train step <= {amount}{impl}"
    if kind == "sac_ratio":
        return (f"{plat} SAC update, {t['members']} {name} critics {t['width']} wide <= "
                f"{_limit(t['limit'])} Dense critics")
    if kind == "natural_ratio":
        return (f"{plat} {t['shape']}: `{t['row']}` train step <= {_limit(t['limit'])} its Dense "
                "twin written the same way")
    if kind == "natural_vs_suite":
        return (f"{plat} {t['shape']}: `{t['row']}` train step <= {_limit(t['limit'])} the suite's "
                f"{name} train step")
    if kind == "ensemble_speedup":
        return (f"{plat} {t['shape']}: {t['members']} {name} networks vmapped >= "
                f"{_limit(t['limit'])} faster than one by one ({t['mode']})")
    if kind == "ensemble_vs_one":
        return (f"{plat} {t['shape']}: train step of {t['members']} vmapped {name} networks <= "
                f"{_limit(t['limit'])} one network's")
    raise ValueError(f"unknown target kind {kind!r}")


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
        *([f"- **note**: {meta['note']}"] if meta.get("note") else []),
        *([f"- skipped: {'; '.join(meta['skipped'])}"] if meta.get("skipped") else []),
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
    out += _targets_section(results)
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
    out += _natural_section(results)
    out += _ensemble_section(results)
    out += _rl_section(results)
    out += ["## Memory", ""]
    for p in results["memory"]["process_peaks"]:
        label = {"device_peak_bytes_in_use": "device peak bytes in use",
                 "host_max_rss": "host max resident set size"}[p["kind"]]
        out.append(f"- after shape `{p['after_shape']}`: {label} {_mib(p['bytes'])} MiB")
    out += ["- per-step memory above: XLA buffer assignment of the compiled train step "
            "(arguments + outputs + temporaries - aliased donations)", ""]
    out += _torch_section(results)
    return "\n".join(out)


def _targets_section(results: dict[str, Any]) -> list[str]:
    if not results["targets"]:
        return ["## Targets", "", f"No targets are defined for platform "
                f"`{results['device']['platform']}`.", ""]
    rows = []
    for t in results["targets"]:
        measured = "-" if t["measured"] is None else f"{t['measured']:.2f}x"
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        rows.append([_target_text(t), measured, met, t["source"]])
    note = ("Ratios are times over times (ours / ObjectRL: below 1 means faster than ObjectRL); "
            "speedups are separate / vmapped.")
    return ["## Targets", "", note, ""] + _table(["target", "measured", "status", "source"], rows) + [""]


def _natural_section(results: dict[str, Any]) -> list[str]:
    out = ["## Train steps written the way a user writes them (`benchmarks/natural.py`)", "",
           "`natural/*`: the package's layers in the user's own `flax.linen` module, "
           "`rngs={'sample': key}`, `mutable=['kl']` + `total_kl`, the loss by hand, `optax.adam` "
           "under a plain `jax.jit` (no donation); `natural/dense` is the same with `nn.Dense`. "
           "`propagate/clt`: a plain Dense MLP with Gaussian parameters through "
           "`propagate_moments`; `bayesianize/lr`: `bayesianize(plain MLP, 'lr')`. Timed "
           "interleaved with the suite's train steps above (same run, same load).", ""]
    if not results.get("natural"):
        return out + ["Not run.", ""]
    rows = []
    for r in results["natural"]:
        rows.append([r["shape"], f"`{r['row']}`", _ms(r["median_s"]), _x(r["ratio_to_twin"]),
                     _x(r["suite_ratio_to_dense"]), _x(r["ratio_to_suite"], 3),
                     f"{r['compile_s']:.2f}", "yes" if r["final_loss_finite"] else "NO"])
    return out + _table(["shape", "row", "train step ms", "x its Dense twin",
                         "suite path x suite Dense", "x suite path (same method)", "compile s",
                         "loss finite"], rows) + [""]


def _ensemble_section(results: dict[str, Any]) -> list[str]:
    out = ["## Ensembles: one vmapped call (`bayeslayers_jax.Ensemble`) vs the members one by one", ""]
    if not results["ensemble"]:
        return out + ["Not run.", ""]
    rows = []
    for e in results["ensemble"]:
        if "skipped" in e:
            rows.append([e["shape"], _NAMES[e["method"]], str(e["members"]), e["skipped"]] + ["-"] * 7)
            continue
        f, t = e["forward"], e["train"]
        rows.append([e["shape"], _NAMES[e["method"]], str(e["members"]),
                     _ms(f["vmapped_s"]), _ms(f["separate_s"]), _x(f["speedup"]),
                     _ms(t["vmapped_s"]), _ms(t["separate_s"]), _ms(t["one_s"]),
                     _x(t["speedup"]), _x(t["vmapped_over_one"])])
    return out + _table(
        ["shape", "method", "members", "forward vmapped ms", "forward separate ms", "speedup",
         "train vmapped ms", "train separate ms", "train one network ms", "speedup",
         "vmapped / one"], rows) + [""]


def _rl_section(results: dict[str, Any]) -> list[str]:
    out = ["## SAC update with an ensemble of critics (one jitted update: target, critic ELBO, "
           "actor gradient through the critics, Adam on both, `optax.incremental_update`)", ""]
    if not results["rl_update"]:
        return out + ["Not run.", ""]
    rows = []
    for r in results["rl_update"]:
        if "skipped" in r:
            rows.append([str(r["members"]), str(r["width"]), _NAMES[r["critic"]], r["skipped"], "-", "-", "-"])
            continue
        rows.append([str(r["members"]), str(r["width"]), _NAMES[r["critic"]], _ms(r["median_s"]),
                     _x(r["ratio_to_dense"]), f"{r['compile_s']:.2f}",
                     "yes" if r["losses_finite"] else "NO"])
    return out + _table(["critics", "width", "critic", "update ms", "x Dense critics",
                         "compile s", "losses finite"], rows) + [""]


def _cache_note(torch: dict[str, Any]) -> str:
    cache = torch.get("inductor_cache")
    if not cache or not cache.get("fx_graph_cache"):
        return ""
    return (f" `compile s` is the first call, which reads inductor's on-disk cache "
            f"(`{cache['dir']}`): small when an earlier run compiled the same graphs.")


def _torch_section(results: dict[str, Any]) -> list[str]:
    torch = results["torch"]
    out = ["## PyTorch comparison: ObjectRL's own layers", ""]
    if torch["status"] != "ok":
        return out + [f"PyTorch: {torch['status']}.", ""]
    out += [f"PyTorch {torch['version']}, ObjectRL {torch.get('objectrl')}, on `{torch['device']}`, "
            f"{torch['threads']} threads, `OMP_WAIT_POLICY={torch.get('omp_wait_policy')}`; train step = forward, KL, Gaussian NLL, backward, "
            "`Adam(fused=True)`; ObjectRL's CLT through a `torch.where` twin of its "
            "`relu_moments` (as shipped it cannot backpropagate: in-place writes); "
            "`torch.compile` compiles the loss (AOTAutograd the backward), Adam eager; "
            "Dense = plain `nn.Linear`, eager. Timed interleaved with our train steps; "
            "ours / ObjectRL below 1 means we are faster." + _cache_note(torch), ""]
    ours = {(r["shape"], r["method"]): r["median_s"] for r in results["records"] if r["mode"] == "train"}
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in torch["records"]:
        by_key.setdefault((r["shape"], r["method"]), {})[r["impl"]] = r
    rows = []
    for (shape, method), impls in by_key.items():
        cells = [shape, _NAMES[method], _ms(ours.get((shape, method)))]
        for impl in ("eager", "compile"):
            r = impls.get(impl)
            if r is None:
                cells += ["-", "-"]
            elif "error" in r:
                cells += [r["error"], "-"]
            else:
                cells += [_ms(r["median_s"]), _x(r.get("ours_over_torch"))]
        c = impls.get("compile")
        cells.append(f"{c['first_call_s']:.1f}" if c and "first_call_s" in c else "-")
        rows.append(cells)
    return out + _table(["shape", "method", "ours ms", "ObjectRL eager ms", "ours / eager",
                         "ObjectRL + compile ms", "ours / compile", "compile s"], rows) + [""]


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
