"""The peers table of one cohort as Markdown, from one or more ``experiments/peers.py``
reports of it (run on the same folds: same data, seed and fold count; a later report's
models are added to the earlier ones' where those failed, were skipped or are absent,
e.g. a peer rerun on its own). The paired
differences are those each report computed against its own reference, so the reports
must share it.

    python experiments/peers_table.py runs/peers_nih.json [runs/peers_nih_autogluon.json]

With ``--over-seeds``: reports of one cohort run with different ``--seed`` (other folds,
other inner splits, other training seeds), one per seed, as one table of each model's
macro AUROC and paired difference from the reference per seed, and their mean.

    python experiments/peers_table.py --over-seeds runs/peers_covid_seed{0,1,2}.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def same(reports: list[dict], keys: tuple[str, ...]) -> None:
    """Refuse reports that differ in any of ``keys``, naming the key and both values."""
    for other in reports[1:]:
        for key in keys:
            if other[key] != reports[0][key]:
                raise SystemExit(f"{key} differs between the reports: {reports[0][key]!r} and {other[key]!r}")


def merged(paths: list[str]) -> dict:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    first = reports[0]
    same(reports, ("data", "n", "seed", "folds", "reference", "budget_s_per_fold"))
    for other in reports[1:]:
        for name, model in other["models"].items():
            kept = first["models"].get(name)
            # new, or it failed or was skipped before
            if "macro_auroc" in model and (kept is None or "macro_auroc" not in kept):
                first["models"][name] = model
    return first


def cell(figure: dict | None, *, difference: bool = False) -> str:
    if not figure:
        return ""
    if difference:
        figure = figure.get("difference")
        if not figure:
            return "reference"
        return f"{figure['point']:+.3f} [{figure['low']:+.3f}, {figure['high']:+.3f}]"
    return f"{figure['point']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"


def table(report: dict) -> str:
    lines = [
        "| model | macro AUROC | Δ vs reference | balanced accuracy | Δ vs reference | macro-F1 | seconds | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        if "skipped" in m or "failed" in m:
            why = m.get("skipped") or "failed: " + m["failed"].strip().splitlines()[-1][:120]
            lines.append(f"| {name} | {why} |  |  |  |  |  |  |")
            continue
        label = f"**{name}** (reference)" if name == report["reference"] else name
        lines.append(
            f"| {label} | {cell(m['macro_auroc'])} | {cell(m['macro_auroc'], difference=True)} "
            f"| {cell(m['balanced_accuracy'])} | {cell(m['balanced_accuracy'], difference=True)} "
            f"| {cell(m['macro_f1'])} | {m.get('wall_seconds', '')} | {m.get('peak_rss_mb', '')} |"
        )
    kind = report["machine"]
    lines += [
        "",
        f"{report['data']}: {report['n']} rows, {report['groups']} groups, {report['folds']} grouped folds (seed "
        f"{report['seed']}), images at {report['image_size']} px, {report['budget_s_per_fold']:g} s per fold for "
        f"each peer; {kind['cpu_capability']}, {'with' if kind['bf16'] else 'without'} bf16 units, "
        f"{kind['cores']} cores. Seconds: wall time of all folds.",
    ]
    return "\n".join(lines)


def over_seeds(reports: list[dict]) -> str:
    """Macro AUROC and its paired difference from each report's reference, per seed."""
    same(reports, ("data", "n", "folds", "budget_s_per_fold"))
    seeds = [r["seed"] for r in reports]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"one report per seed, please: seeds {seeds}")
    names = [n for n in reports[0]["models"] if all("macro_auroc" in r["models"].get(n, {}) for r in reports)]
    head = " | ".join(f"seed {s}" for s in seeds)
    lines = [f"| model | {head} | mean | Δ vs reference per seed | mean Δ |", "|---|" + "---|" * (len(seeds) + 3)]
    for name in names:
        figures = [r["models"][name]["macro_auroc"] for r in reports]
        points = [f["point"] for f in figures]
        deltas = [f.get("difference", {}).get("point") for f in figures]
        shown = ", ".join("reference" if d is None else f"{d:+.3f}" for d in deltas)
        known = [d for d in deltas if d is not None]
        mean_delta = f"{sum(known) / len(known):+.3f}" if known else ""
        cells = " | ".join(f"{x:.3f}" for x in points)
        lines.append(f"| {name} | {cells} | {sum(points) / len(points):.3f} | {shown} | {mean_delta} |")
    references = ", ".join(f"seed {r['seed']}: {r['reference']}" for r in reports)
    lines += ["", f"{reports[0]['data']}: macro AUROC of the pooled out-of-fold predictions; references: {references}."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+")
    p.add_argument("--over-seeds", action="store_true", help="one report per seed: macro AUROC per seed and mean")
    args = p.parse_args()
    if args.over_seeds:
        print(over_seeds([json.loads(Path(r).read_text()) for r in args.reports]))
    else:
        print(table(merged(args.reports)))


if __name__ == "__main__":
    main()
