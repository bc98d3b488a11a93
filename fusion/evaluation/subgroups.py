"""How a model does in each subgroup of patients: by sex, projection, age band...

Shortcuts are the known failure of chest X-ray models (DeGrave et al., Nat Mach Intell
2021: COVID-19 models that read the view, laterality markers or the source hospital):
a model that leans on one does well overall and badly where the shortcut does not hold.
A subgroup report shows, for each value of a categorical record feature (or each band of
a numeric one, declared in the schema), the number of films and patients, the macro
AUROC and each class's sensitivity with patient-bootstrap intervals, and flags a
subgroup whose AUROC interval lies wholly below the overall one.
"""

from __future__ import annotations

import numpy as np

from fusion.evaluation.intervals import macro_auroc, metric_intervals

MIN_SUBGROUP = 10  # fewer films than this: counted, not scored


def feature_for(schema, name: str):
    """The schema feature a ``--by`` name means (``age_band`` is ``age``'s bands).

    Raises
    ------
    ValueError
        No such feature, or one whose kind cannot split patients as declared (a
        numeric feature without bands).
    """
    base = name[: -len("_band")] if name.endswith("_band") else name
    if base not in schema.feature_names:
        raise ValueError(
            f"subgroups: {name!r} is not a feature of schema {schema.name!r}; features: {list(schema.feature_names)}"
        )
    feature = schema.feature(base)
    try:
        feature.check_subgroups()
    except ValueError as err:
        raise ValueError(f"subgroups: {err}") from None
    return feature


def subgroup_report(
    records, labels, proba, classes, groups, by: list[str], schema, *, n_boot: int = 1000, seed: int = 0, pred=None
) -> dict:
    """Per-subgroup metrics for each feature in ``by``.

    Parameters
    ----------
    records : pandas.DataFrame
        Parsed record values, row-aligned with ``labels`` and ``proba``.
    labels, proba, classes, groups
        As for :func:`~fusion.evaluation.intervals.metric_intervals`.
    by : list of str
        Feature names (categorical, or numeric with bands; ``<name>_band`` also works).
    pred : array of int, optional
        The predicted labels sensitivity is of (the model's decision rule); default the
        most probable class.

    Returns
    -------
    dict
        ``overall`` (macro AUROC and interval) and, per feature, per subgroup: ``n``,
        ``patients``, ``macro_auroc`` with ``interval``, ``sensitivity`` per class with
        intervals, and ``flagged`` (interval wholly below the overall one).
    """
    labels, proba = np.asarray(labels), np.asarray(proba)
    pred = proba.argmax(axis=1) if pred is None else np.asarray(pred)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    overall = metric_intervals(labels, proba, classes, groups, n_boot=n_boot, seed=seed, pred=pred)
    out = {"overall": {"macro_auroc": macro_auroc(labels, proba), "interval": overall["auroc_macro"]}}
    for name in by:
        feature = feature_for(schema, name)
        bands = np.array([feature.band(v) for v in records[feature.name]], dtype=object)
        report = {}
        for value in [b for b in feature.band_names() if b in set(bands)]:
            rows = np.flatnonzero(bands == value)
            entry = {"n": len(rows), "patients": len(set(groups[rows]))}
            if len(rows) >= MIN_SUBGROUP:
                ci = metric_intervals(
                    labels[rows],
                    proba[rows],
                    classes,
                    groups[rows],
                    n_boot=n_boot,
                    seed=seed,
                    pred=pred[rows],
                )
                present = {c: int((labels[rows] == i).sum()) for i, c in enumerate(classes)}
                entry.update(
                    macro_auroc=macro_auroc(labels[rows], proba[rows]),
                    interval=ci["auroc_macro"],
                    sensitivity={
                        c: {
                            "value": float((pred[rows] == i)[labels[rows] == i].mean()) if present[c] else None,
                            "interval": ci["per_class"][c]["sensitivity"],
                            "n": present[c],
                        }
                        for i, c in enumerate(classes)
                    },
                )
                below = (
                    entry["interval"]
                    and overall["auroc_macro"]
                    and entry["interval"]["high"] < overall["auroc_macro"]["low"]
                )
                entry["flagged"] = bool(below)
            report[value] = entry
        out[feature.name if not name.endswith("_band") else name] = report
    return out


def format_subgroups(report: dict) -> str:
    """The subgroup report as a readable table."""

    def ci(iv):
        return f"[{iv['low']:.3f}, {iv['high']:.3f}]" if iv else ""

    overall = report["overall"]
    lines = [f"overall macro AUROC {overall['macro_auroc']:.3f} {ci(overall['interval'])}"]
    for name, groups in report.items():
        if name == "overall":
            continue
        lines.append(f"-- by {name}")
        for value, e in groups.items():
            if "macro_auroc" not in e:
                lines.append(f"  {value:<14} n {e['n']:>4}  (too few to score)")
                continue
            auroc = "n/a" if e["macro_auroc"] is None else f"{e['macro_auroc']:.3f}"
            sens = ", ".join(
                f"{c} {s['value']:.2f} {ci(s['interval'])}"
                for c, s in e["sensitivity"].items()
                if s["value"] is not None
            )
            flag = "  << below overall" if e.get("flagged") else ""
            lines.append(f"  {value:<14} n {e['n']:>4}  macro AUROC {auroc} {ci(e['interval'])}{flag}")
            lines.append(f"  {'':<14} sensitivity: {sens}")
    return "\n".join(lines)
