"""The model card every run folder gets (``MODEL_CARD.md``), written from the run's own
metadata, after Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): what
the model is for and not for, what it was trained on, how it was preprocessed, how well
it does with intervals, how well calibrated it is, where its operating points lie, how
it does in subgroups, and what limits it.
"""

from __future__ import annotations

import platform
from datetime import date

from fusion.schema import group_unit

SMALL_TEST = 100  # fewer test films than this: every figure is a rough estimate
RARE = 10  # fewer films of a class than this: its figures are not to be trusted


def _ci(value, interval, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"{text} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]" if interval else text


def _metrics_table(m: dict, classes) -> list[str]:
    ci = m.get("intervals") or {}
    lines = [
        "| metric | value [95% CI] |",
        "|---|---|",
        f"| accuracy | {_ci(m['accuracy'], ci.get('accuracy'))} |",
        f"| balanced accuracy (mean per-class sensitivity) | "
        f"{_ci(m.get('balanced_accuracy'), ci.get('balanced_accuracy'))} |",
        f"| macro-F1 | {_ci(m['macro_f1'], ci.get('macro_f1'))} |",
        f"| macro AUROC | {_ci(m['auroc_macro'], ci.get('auroc_macro'))} |",
        f"| ECE | {_ci(m['ece'], ci.get('ece'))} |",
        "",
        "| class | n | sensitivity | specificity | AUROC |",
        "|---|---|---|---|---|",
    ]
    for c in classes:
        pc, iv = m["per_class"][c], (ci.get("per_class") or {}).get(c, {})
        lines.append(
            f"| {c} | {pc['support']} | {_ci(pc['sensitivity'], iv.get('sensitivity'), 2)} "
            f"| {_ci(pc['specificity'], iv.get('specificity'), 2)} | {_ci(pc['auroc'], iv.get('auroc'), 2)} |"
        )
    return lines


def _token_counts(metrics: dict) -> str:
    """``sex 'unknown' 34, localization 'unknown' 179``: how many values each declared
    missing token made missing (``metrics.json``'s ``missing_tokens``)."""
    return ", ".join(
        f"{feature} {token!r} {n}"
        for feature, counts in metrics["missing_tokens"].items()
        for token, n in counts.items()
    )


def _subgroup_lines(report: dict) -> list[str]:
    lines = ["| feature | subgroup | n | macro AUROC [95% CI] | flag |", "|---|---|---|---|---|"]
    for name, groups in report.items():
        if name == "overall":
            continue
        for value, e in groups.items():
            auroc = _ci(e.get("macro_auroc"), e.get("interval")) if "macro_auroc" in e else "too few to score"
            lines.append(f"| {name} | {value} | {e['n']} | {auroc} | {'below overall' if e.get('flagged') else ''} |")
    return lines


BALANCE_WORDS = {
    "weights": "class-weighted loss (inverse class frequency)",
    "sampling": "class-balanced batches (rows drawn with replacement, each class equally often), plain loss",
    "none": "none (plain loss, every row once per epoch)",
}


def _decision_line(calibration: dict, classes) -> str:
    """How labels are read off the probabilities (``calibration.decision``)."""
    if calibration.get("decision", "argmax") == "argmax":
        return "- Decision: the most probable class (argmax)"
    priors = ", ".join(f"{c} {p:.3f}" for c, p in zip(classes, calibration["priors"], strict=True))
    return (
        "- Decision: balanced: the class whose probability most exceeds its prior (the rule that maximises "
        f"balanced accuracy; priors the probabilities embody, estimated on the validation split: {priors})"
    )


def _auto_lines(auto: dict) -> list[str]:
    """What ``--fusion auto`` chose, why, and every candidate's inner-CV score."""
    lines = [f"- Strategy chosen by inner cross-validation of the training part (`--fusion auto`): `{auto['chosen']}`"]
    if auto.get("reason"):  # runs before auto weighed single modalities have none
        lines[0] += f": {auto['reason']}."
    lines += ["", "| candidate | modalities | inner-CV macro AUROC | seconds |", "|---|---|---|---|"]
    for name, c in auto["candidates"].items():
        auroc = "n/a" if c["inner_cv_macro_auroc"] is None else f"{c['inner_cv_macro_auroc']:.4f}"
        modalities = ", ".join(c.get("modalities", [])) or "as asked"
        lines.append(
            f"| {name}{' (chosen)' if name == auto['chosen'] else ''} | {modalities} | {auroc} | {c['seconds']} |"
        )
    if auto.get("left_out"):
        lines += [
            "",
            f"Left out: {', '.join(auto['left_out'])} (they read the image through a frozen pretrained backbone, "
            "and no starting weights read this model's images).",
        ]
    return [*lines, ""]


def model_card(metrics: dict, schema, *, pretraining: dict | None = None, versions: dict | None = None) -> str:
    """The card's Markdown, from a run's ``metrics.json`` content and its schema.

    Parameters
    ----------
    metrics : dict
        As ``python -m fusion.train`` writes it (``val``/``test`` with intervals,
        calibration, operating points, ``subgroups``).
    schema : Schema or None
    pretraining : dict, optional
        The provenance record of shipped starting weights, when they were used.
    versions : dict, optional
        Library versions to list.
    """
    classes = metrics["classes"]
    test = metrics.get("test")
    words = card_words(metrics, schema)
    out = [
        f"# Model card: {metrics['task']}",
        "",
        f"Written by fusion {metrics.get('fusion_version', '')} on {date.today().isoformat()} from this run's own "
        "metadata (Mitchell et al. 2019, *Model Cards for Model Reporting*).",
        "",
        "## Model details",
        f"- Modalities: {', '.join(metrics['modalities'])}; fusion strategy `{metrics.get('fusion')}`, "
        f"backend `{metrics.get('backend')}`"
        + (f", image backbone `{metrics['backbone']}`" if metrics.get("backbone") else "")
        + (" reading colour images (3 channels)" if _channels(metrics) == 3 else "")
        + _head(metrics),
        *_detail_lines(metrics, words["items"]),
        f"- Classes (output order): {', '.join(classes)}",
        f"- Calibration: {metrics.get('calibration', {}).get('method', 'none')} (fitted on the validation split)",
        _decision_line(metrics.get("calibration", {}), classes),
    ]
    balance = (metrics.get("config") or {}).get("train", {}).get("balance")
    if balance and metrics.get("backend") == "joint":
        out.append(f"- Class imbalance in training the network: {BALANCE_WORDS[balance]}")
    if metrics.get("auto"):
        out += _auto_lines(metrics["auto"])
    withheld = metrics.get("calibration", {}).get("withheld")
    if withheld:
        out += ["", "## Figures not fitted: too few validation cases", ""]
        out += [f"- {reason}" for reason in withheld]
    out += [
        "",
        "## Intended use",
        f"- Research on classifying patients from {words['image']} and a clinical record together, and on what "
        "each modality contributes.",
        "- **Not a medical device and not for diagnosis**: no clinical decision may rest on it.",
        "",
        "## Out of scope",
        "- Patients, hospitals, scanners or time periods unlike the training data (see Limitations); "
        "other imaging modalities; children or adults where the training data held only the other.",
        "",
        "## Training data",
        f"- Source: {metrics.get('data')}",
        f"- {words['items'].capitalize()}: {metrics['n_train']} train, {metrics['n_val']} validation, "
        f"{metrics['n_test']} test; splits are by {words['unit']} (no {words['unit']} in two splits).",
        f"- Rows skipped for bad values or unreadable images: {len(metrics.get('skipped', []))} "
        "(listed in metrics.json).",
    ]
    if metrics.get("missing_tokens"):
        out.append(f"- Values the schema declares as not known, kept as missing: {_token_counts(metrics)}.")
    if pretraining:
        out += [
            f"- Image backbone pretrained on: {pretraining.get('data')}",
            f"  - Domain shift: {pretraining.get('domain_shift')}",
        ]
    if schema is not None:
        out += ["", "## Preprocessing and exclusions (from the schema)"]
        for f in schema.features:
            tokens = f"; {', '.join(repr(t) for t in f.missing_tokens)} taken as not known" if f.missing_tokens else ""
            out.append(f"- `{f.name}`: {f.card_entry()}; missing values: {f.missing}{tokens}")
        for column, reason in schema.excluded.items():
            out.append(f"- excluded `{column}`: {reason}")
    for split in ("val", "test"):
        m = metrics.get(split)
        if not m:
            continue
        out += ["", f"## Metrics: {split} ({metrics['n_' + split]} {words['items']})", ""]
        out += _metrics_table(m, classes)
        out.append("")
        out.append(
            f"95% intervals: bootstrap resampling {words['unit']}s (all {words['items']} of a {words['unit']} "
            "move together), seeded."
        )
        cal = m.get("calibration")
        if cal:
            b, a = cal["before"], cal["after"]
            out += [
                "",
                f"Calibration on {split}: ECE {b['ece']:.3f} -> {a['ece']:.3f}, Brier {b['brier']:.3f} -> "
                f"{a['brier']:.3f}, NLL {b['nll']:.3f} -> {a['nll']:.3f} (before -> after)"
                + (" (fitted on this split: in-sample)" if split == "val" else ""),
            ]
        if m.get("reliability"):
            out += ["", *_reliability_lines(m["reliability"], split)]
        ops = m.get("operating_points")
        if ops:
            out += ["", "| operating point | threshold | sensitivity | specificity |", "|---|---|---|---|"]
            for c, op in ops.items():
                sens = "n/a" if op["sensitivity"] is None else f"{op['sensitivity']:.2f}"
                spec = "n/a" if op["specificity"] is None else f"{op['specificity']:.2f}"
                if op.get("n_positive", RARE) < RARE:
                    sens = f"too few ({op['n_positive']} {c})"
                if op.get("n_negative", RARE) < RARE:
                    spec = f"too few ({op['n_negative']} not {c})"
                out.append(f"| {c} | {op['threshold']:.3f} | {sens} | {spec} |")
    if test and test.get("fusion_change"):
        out += ["", "## What fusion changed (test split)", "", *_change_lines(test["fusion_change"], metrics, words)]
    if test and test.get("decision_curves", {}).get("classes"):
        out += ["", "## Decision curves (test split)", "", *_decision_lines(test["decision_curves"])]
    if test and test.get("prediction_sets"):
        out += ["", "## Prediction sets (test split)", "", *_set_lines(test["prediction_sets"], metrics, words)]
    if test and test.get("subgroups"):
        out += ["", "## Subgroups (test split)", "", *_subgroup_lines(test["subgroups"])]
    out += ["", "## Known limitations"] + [f"- {x}" for x in limitations(metrics, schema, pretraining)]
    out += ["", "## TRIPOD+AI checklist", "", *_tripod_lines(metrics)]
    versions = {"python": platform.python_version(), **(versions or {})}
    out += ["", "## Versions", "- " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    out += _provenance(metrics)
    return "\n".join([*out, ""])


def _provenance(metrics: dict) -> list[str]:
    """The machine's kind and the command that made the run (what repeats it), when the
    run recorded them (runs of fusion 0.1.0 before they did, and models fitted from
    Python, have none)."""
    out = []
    kind = (metrics.get("environment") or {}).get("machine")
    if kind:
        bf16 = "with bf16 units" if kind.get("bf16") else "without bf16 units"
        out.append(
            f"- machine: {kind.get('processor')}, {kind.get('cpu_capability')} {bf16}, {kind.get('cores')} cores"
            + (f", {kind['cuda']}" if kind.get("cuda") else "")
        )
    if metrics.get("command"):
        out += [
            "",
            "## Reproduce",
            "",
            "```",
            metrics["command"],
            "```",
            "",
            "or `fusion train --config <this folder>/config.json` (the same settings, any command line).",
        ]
    return out


def _change_lines(change: dict, metrics: dict, words: dict) -> list[str]:
    """Per class, the fused answer's sensitivity and specificity beside the best single
    modality's on the same rows, with the classes where fusion lost sensitivity named."""

    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    fused, single = change["fused"], change["single"]
    out = [
        f"The fused answer ({fused}) beside the model's best single-modality answer ({single}, chosen by "
        f"{change['chosen_by']}) on the same {metrics['n_test']} test {words['items']}: a gain in accuracy bought "
        "with a class's sensitivity shows here.",
        "",
        f"| class | n | sensitivity: {fused} | sensitivity: {single} | specificity: {fused} | specificity: {single} |",
        "|---|---|---|---|---|---|",
    ]
    lost = []
    for c, row in change["per_class"].items():
        a, b = row[fused], row[single]
        few = f" (too few: under {RARE})" if row["n"] < RARE else ""
        out.append(
            f"| {c} | {row['n']}{few} | {f(a['sensitivity'])} | {f(b['sensitivity'])} | {f(a['specificity'])} | "
            f"{f(b['specificity'])} |"
        )
        if a["sensitivity"] is not None and b["sensitivity"] is not None and a["sensitivity"] < b["sensitivity"]:
            lost.append(f"{c} ({b['sensitivity']:.2f} -> {a['sensitivity']:.2f})")
    out += ["", f"Sensitivity lower with fusion: {', '.join(lost)}." if lost else "No class lost sensitivity."]
    return out


TRIPOD_AI = (
    # (item number and name, the section of this card that answers it, or None: the user's to write)
    ("6a Data: source", "Training data (source)", None),
    ("7a/8a Participants and sample size per split", "Training data (counts; splits by patient)", None),
    ("7b Data preparation, predictors and exclusions", "Preprocessing and exclusions (from the schema)", None),
    ("8 Outcome (classes) and how it is read off the model", "Model details (classes, decision rule)", None),
    ("9 Missing data: how handled, how much", "Preprocessing (missing values), Training data (skipped rows)", None),
    ("12 Model building: type, fusion strategy, tuning, class imbalance", "Model details", None),
    ("12c Calibration method", "Model details (calibration); Metrics (calibration, reliability)", None),
    ("12e Performance measures with intervals", "Metrics: val and test (95% patient-bootstrap intervals)", None),
    ("12f Fairness: performance in subgroups", "Subgroups (test split)", "subgroups"),
    ("12g Clinical utility", "Decision curves (test split)", "decision_curves"),
    ("12g Uncertainty of individual predictions", "Prediction sets (test split)", "prediction_sets"),
    ("23 Model performance beyond single modalities", "What fusion changed (test split)", "fusion_change"),
    ("26 Limitations", "Known limitations; Figures not fitted", None),
)
"""The TRIPOD+AI items (Collins et al., BMJ 2024;385:e078378) a run can answer from its
own metadata, and where the card answers them; the third field names the test figure
the answer needs (the item is left to the user when the run has none)."""

TRIPOD_AI_USER = (
    "5 Source of data: study design, dates of collection, setting and centres",
    "6 Eligibility criteria of participants and how they were recruited",
    "8 How and by whom the outcome was assessed, and blinding to the predictors",
    "9 How each predictor (and the images) was measured, and when relative to the outcome",
    "12h Intended users, the clinical pathway and how predictions are to be used",
    "18 Ethics approval, consent, registration and protocol",
    "19-22 Funding, conflicts of interest, code and data availability, patient and public involvement",
    "27 Interpretation against other studies, and what external validation is needed",
)
"""TRIPOD+AI items no run can answer: the user must write them."""


def _tripod_lines(metrics: dict) -> list[str]:
    """Where this card answers each TRIPOD+AI item it can, and what is left to the user."""
    test = metrics.get("test") or {}
    out = [
        "Where this card answers the items of the TRIPOD+AI reporting checklist (Collins et al., BMJ 2024) that "
        "a run can answer from its own data, and the items a report must add.",
        "",
        "| item | answered in |",
        "|---|---|",
    ]
    missing = []
    for item, where, needs in TRIPOD_AI:
        if needs is None or test.get(needs):
            out.append(f"| {item} | {where} |")
        else:
            missing.append(f"{item} (this run has no {where.split(' (')[0].lower()})")
    out += ["", "To be written by the user:", *[f"- {item}" for item in (*missing, *TRIPOD_AI_USER)]]
    return out


def _reliability_lines(bins: list[dict], split: str) -> list[str]:
    """The reliability diagram as numbers, with how many predictions each point rests on
    (``plots/reliability_<split>.png`` draws them)."""
    out = [
        f"Reliability on {split} (calibrated; a point resting on few predictions is rough):",
        "",
        "| confidence | n | mean confidence | fraction correct |",
        "|---|---|---|---|",
    ]
    for b in bins:
        out.append(f"| {b['low']:.1f}-{b['high']:.1f} | {b['n']} | {b['confidence']:.2f} | {b['accuracy']:.2f} |")
    return out


def _decision_lines(report: dict) -> list[str]:
    """Where acting on each answer beats treating everyone and no one (Vickers & Elkin
    2006; ``plots/decision_curves_test.png``)."""
    from fusion.evaluation.decision import describe_ranges

    out = [
        "Threshold probabilities at which acting on the model has more net benefit than treating every patient "
        "and than treating none (decision curve analysis, one class against the rest; the figure is "
        "`plots/decision_curves_test.png`). Outside these ranges the model is of no use for that decision.",
        "",
        "| class | prevalence | " + " | ".join(next(iter(report["classes"].values()))["models"]) + " |",
        "|---|---|" + "---|" * len(next(iter(report["classes"].values()))["models"]),
    ]
    for name, entry in report["classes"].items():
        ranges = " | ".join(describe_ranges(m["useful"]) for m in entry["models"].values())
        out.append(f"| {name} | {entry['prevalence']:.2f} | {ranges} |")
    return out


def _set_lines(sets: dict, metrics: dict, words: dict) -> list[str]:
    """Empirical coverage and set size of the prediction sets on the test split, overall
    and per true class, with their intervals (see :mod:`fusion.evaluation.conformal`)."""

    def figure(f: dict, digits: int) -> str:
        if f["value"] is None:
            return "n/a"
        if f["low"] is None:
            return f"{f['value']:.{digits}f}"
        return f"{f['value']:.{digits}f} [{f['low']:.{digits}f}, {f['high']:.{digits}f}]"

    kind = "within each class (class-conditional)" if sets["method"] == "class" else "over patients (marginal)"
    out = [
        f"Each answer comes with the classes that cannot be ruled out at {sets['target']:.0%} coverage {kind}: "
        f"split conformal prediction on the {metrics['n_val']} validation {words['items']}, each {words['unit']} "
        "weighing one. The promise holds for new patients like the validation ones; below is how often it held here.",
        "",
        "| true class | n | coverage | mean set size |",
        "|---|---|---|---|",
        f"| all | {sets['n']} | {figure(sets['coverage'], 2)} | {figure(sets['set_size'], 2)} |",
    ]
    for c, pc in sets["per_class"].items():
        few = f" (too few: under {RARE})" if pc["n"] < RARE else ""
        out.append(f"| {c} | {pc['n']}{few} | {figure(pc['coverage'], 2)} | {figure(pc['set_size'], 2)} |")
    sizes = ", ".join(f"{n} of size {k}" for k, n in sets["sizes"].items() if n)
    out += ["", f"Set sizes: {sizes}."]
    return out


def limitations(metrics: dict, schema, pretraining: dict | None) -> list[str]:
    """What the run's own numbers and schema say a reader must keep in mind."""
    notes = []
    test = metrics.get("test")
    items = card_words(metrics, schema)["items"]
    if not test:
        notes.append("No test split: every figure here is on data that took part in training or calibration.")
    elif metrics["n_test"] < SMALL_TEST:
        notes.append(f"The test split holds {metrics['n_test']} {items}: figures are rough, see their intervals.")
    if test:
        rare = [f"{c} ({pc['support']})" for c, pc in test["per_class"].items() if pc["support"] < RARE]
        if rare:
            notes.append(
                f"Classes with fewer than {RARE} test {items}: {', '.join(rare)}; their figures are unreliable."
            )
    if schema is not None:
        imputed = [f.name for f in schema.features if f.missing == "impute"]
        if imputed:
            notes.append(
                f"Missing values of {', '.join(imputed)} are imputed without an indicator (the schema judged that "
                "whether a value was recorded tells the source, not the patient); imputed medians can still mark "
                "the source."
            )
    if pretraining:
        notes.append("The image backbone was pretrained on pediatric films of one hospital (see Training data).")
    if "synthetic" in str(metrics.get("data", "")):
        notes.append("Trained and tested on the synthetic demonstration cohort: says nothing about real patients.")
    if items == "films":
        notes.append(
            "Shortcuts (view, laterality markers, source hospital) are the known failure of chest X-ray models "
            "(DeGrave et al. 2021): check the subgroup table before trusting a figure."
        )
    else:
        notes.append(
            "Shortcuts (rulers, ink marks, the camera or clinic an image came from) are known failures of "
            "dermatoscopy models (Winkler et al. 2019): check the subgroup table before trusting a figure."
        )
    return notes


def card_words(metrics: dict, schema) -> dict[str, str]:
    """How the card names what it counts: ``items`` ("films" of gray chest X-rays,
    "images" of a colour model), ``image`` (what a patient is classified from) and
    ``unit`` (the schema's group: "patient", or "lesion" for HAM10000)."""
    colour = _channels(metrics) == 3
    return {
        "items": "images" if colour else "films",
        "image": "a colour image (dermatoscopy, fundus, pathology)" if colour else "a chest X-ray",
        "unit": group_unit(schema),
    }


def _channels(metrics: dict) -> int | None:
    """The image channels the run's configuration records (None: gray, or no image)."""
    image = (metrics.get("config") or {}).get("image") or {}
    return image.get("channels") if metrics.get("backbone") else None


def _detail_lines(metrics: dict, items: str) -> list[str]:
    """The detail limit of the image branch (``image.detail``), where one was set and
    removed anything: a reader must know the model never saw fine texture."""
    image = (metrics.get("config") or {}).get("image") or {}
    detail, size = image.get("detail"), image.get("image_size")
    if not (metrics.get("backbone") and detail and size and detail < size):
        return []
    return [
        f"- Image detail: limited to {detail} x {detail} px (each {size} px input averaged over blocks of "
        f"{size // detail} x {size // detail} pixels and brought back to its size, in training and prediction "
        f"alike), against shortcuts in fine texture that differ between the classes' {items} for reasons of "
        "acquisition"
    ]


def _head(metrics: dict) -> str:
    """ ", fusion head `film`" for a joint network that joins two or more modalities
    (a one-modality network has nothing to join; other strategies have no head)."""
    kind = metrics.get("config", {}).get("head", {}).get("kind")
    if kind is None or metrics.get("backend") != "joint" or len(metrics.get("modalities", ())) < 2:
        return ""
    return f", fusion head `{kind}`"
