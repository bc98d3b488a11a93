"""What each modality adds, read off one fused model: its answers from the image alone
and from the record alone on the same patients (it was trained with modality dropout,
so it answers from either), beside its answer from both.

A gain in accuracy can be bought with a rare class's sensitivity. :func:`fusion_change`
sets, per class, the sensitivity and specificity of the fused answer beside those of the
best single-modality answer on the same test rows, the single modality being chosen on
the validation split (by macro AUROC), not on the rows it is compared on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAMES = {"image": "image", "tabular": "record"}


def fused_name(modalities: Sequence[str]) -> str:
    """``"image + record"``, ``"image"``: how a model's answer is named in reports."""
    return " + ".join(NAMES[m] for m in modalities)


def modality_answers(clf, part, proba: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: calibrated probabilities}`` on ``part``: the model's own (``proba``) and,
    for a fused model, its answer from each single modality the data hold."""
    answers = {fused_name(clf.modalities_): proba}
    if len(clf.modalities_) > 1:
        for m in clf.modalities_:
            if m in part.modalities:
                answers[f"{NAMES[m]} only"] = clf.predict_dataset(part, gather=True, modalities=(m,))
    return answers


def single_aurocs(y: np.ndarray, answers: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Macro AUROC of each single-modality answer (the ones named "... only")."""
    from fusion.evaluation.intervals import macro_auroc

    return {name: macro_auroc(y, p) for name, p in answers.items() if name.endswith(" only")}


def fusion_change(
    y: np.ndarray, answers: dict[str, np.ndarray], classes: Sequence[str], decide, chosen: str, reason: str
) -> dict:
    """Per class, sensitivity and specificity of the fused answer (the first of
    ``answers``) and of the single-modality answer ``chosen``, labels read by ``decide``
    (the model's decision rule) on the same rows; ``reason`` says how ``chosen`` was
    picked."""
    y = np.asarray(y)
    fused = next(iter(answers))
    labels = {name: decide(answers[name]) for name in (fused, chosen)}
    per_class = {}
    for c, name in enumerate(classes):
        positive = y == c
        row = {"n": int(positive.sum())}
        for model, pred in labels.items():
            hit = pred == c
            row[model] = {
                "sensitivity": float(hit[positive].mean()) if positive.any() else None,
                "specificity": float((~hit[~positive]).mean()) if (~positive).any() else None,
            }
        per_class[name] = row
    return {"fused": fused, "single": chosen, "chosen_by": reason, "per_class": per_class}


def best_single(val_aurocs: dict[str, float | None] | None, test_aurocs: dict[str, float | None]) -> tuple[str, str]:
    """The single-modality answer to compare with, and why: the best on validation macro
    AUROC, or, without a validation figure, the best on test (which favours the single
    modality, the conservative side for a claim that fusion helps)."""
    usable = {k: v for k, v in (val_aurocs or {}).items() if v is not None}
    if usable:
        return max(usable, key=usable.get), "the higher validation macro AUROC"
    usable = {k: v for k, v in test_aurocs.items() if v is not None}
    return max(usable, key=usable.get), "the higher test macro AUROC (no validation figure)"
