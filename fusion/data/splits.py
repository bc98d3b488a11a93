"""Patient-grouped, stratified train / validation / test splits.

Images of one patient are correlated (same anatomy, same hospital, same disease
course), so a patient on both sides of a split inflates every metric. Splits here are
made on groups, stratified by label, and seeded.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def _one_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``labels`` into (rest, held-out) of about ``fraction``, grouped and stratified."""
    n_splits = max(2, round(1.0 / fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(
            f"cannot hold out {fraction:.0%} by patient: only {n_groups} patients (need at least {n_splits})"
        )
    counts = np.bincount(labels)
    if counts[counts > 0].min() < n_splits:
        # Stratification needs each class in every fold; fall back to grouping alone
        # rather than failing on tiny datasets.
        labels = np.zeros_like(labels)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return rest, held


def grouped_split(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Indices of a stratified train/validation/test split with no group on two sides.

    Parameters
    ----------
    labels : array of int, shape (n,)
    groups : array, shape (n,), optional
        Patient ids; each row is its own group when omitted.
    val_fraction, test_fraction : float
        Approximate shares of rows (exact shares depend on group sizes). A fraction of
        0 gives an empty split.
    seed : int

    Returns
    -------
    dict
        ``{"train": idx, "val": idx, "test": idx}``, sorted int arrays.

    Examples
    --------
    >>> s = grouped_split(np.array([0, 1] * 20), np.repeat(np.arange(20), 2), seed=0)
    >>> sorted(s), len(s["train"]) + len(s["val"]) + len(s["test"])
    (['test', 'train', 'val'], 40)
    """
    labels = np.asarray(labels)
    n = len(labels)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries but labels has {n}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 0.5:
            raise ValueError(f"{name} must be in [0, 0.5); got {frac}")
    _, group_codes = np.unique(groups, return_inverse=True)
    index = np.arange(n)
    test = np.array([], dtype=np.int64)
    if test_fraction > 0:
        rest, held = _one_fold(labels, group_codes, test_fraction, seed)
        index, test = index[rest], index[held]
    val = np.array([], dtype=np.int64)
    if val_fraction > 0:
        rest, held = _one_fold(labels[index], group_codes[index], val_fraction / (1.0 - test_fraction), seed + 1)
        index, val = index[rest], index[held]
    return {"train": np.sort(index), "val": np.sort(val), "test": np.sort(test)}


def grouped_kfold(
    labels: np.ndarray, groups: np.ndarray | None = None, *, k: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified ``k``-fold cross-validation folds with no group in two folds.

    Returns
    -------
    list of (train_index, test_index)
        Each row is in exactly one test fold.

    Raises
    ------
    ValueError
        With fewer groups than folds.
    """
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    _, codes = np.unique(groups, return_inverse=True)
    if codes.max() + 1 < k:
        raise ValueError(f"cannot make {k} folds by patient from {codes.max() + 1} patients")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(te)) for tr, te in splitter.split(np.zeros(len(labels)), labels, codes)]
