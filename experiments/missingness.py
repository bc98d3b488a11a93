"""How much of a record model's score comes from *where* values are missing, on the
folds of ``experiments/cv.py``: HistGradientBoosting and XGBoost with their native
missing values, with each number's missing values replaced by the median (the schema's
``missing = "impute"`` without indicator), and HistGradientBoosting on the missingness
pattern and the categories alone; then, on the medians, what of the rest is the model
family: HistGradientBoosting without its minimum of 20 rows per leaf, and XGBoost at a
comparable size (learning rate 0.05, depth 4, 100 rounds) with a growing minimum child
weight (XGBoost's nearest knob: a sum of hessians, not a count of rows). Written to
explain why record-only peers lead fusion's XGBoost on covid-chestxray (docs/peers.md).

    python experiments/missingness.py --data ../shared/data/covid-chestxray --schema covid_chestxray
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.ensemble import HistGradientBoostingClassifier

from fusion import grouped_kfold, load_dataset
from fusion.evaluation import bootstrap_interval, macro_auroc


def out_of_fold(make, X: pd.DataFrame, y: np.ndarray, folds, k: int) -> np.ndarray:
    proba = np.zeros((len(y), k))
    for train, test in folds:
        model = make().fit(X.iloc[train], y[train])
        proba[np.ix_(test, model.classes_)] = model.predict_proba(X.iloc[test])
    return proba


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    ds = load_dataset(args.data, args.schema, image_size=64, modalities=("tabular",))
    numbers = [f.name for f in ds.schema.features if f.type == "numeric"]
    categories = [f.name for f in ds.schema.features if f.type != "numeric"]
    X = ds.records.copy()
    for name in categories:
        X[name] = X[name].astype(object).where(X[name].notna(), np.nan).astype("category")
    # The median of all rows: a bound on what each fold's own median would give.
    medians = X.copy()
    medians[numbers] = medians[numbers].fillna(medians[numbers].median())
    pattern = pd.concat([X[numbers].isna().astype(float).add_suffix("_missing"), X[categories]], axis=1)
    folds = grouped_kfold(ds.labels, ds.groups, k=5, seed=args.seed)
    k = len(ds.classes)

    def hgb(**kw):
        return lambda: HistGradientBoostingClassifier(
            categorical_features="from_dtype", learning_rate=0.05, max_leaf_nodes=15, random_state=args.seed, **kw
        )

    def boost(**kw):
        return lambda: xgb.XGBClassifier(enable_categorical=True, tree_method="hist", random_state=args.seed, **kw)

    def sized(min_child_weight):
        return boost(learning_rate=0.05, max_depth=4, n_estimators=100, min_child_weight=min_child_weight)

    print(f"{len(numbers)} numbers, {len(categories)} categories; {X[numbers].isna().mean().mean():.0%} missing")
    for name, make, table in (
        ("HistGradientBoosting, missing values native", hgb(), X),
        ("HistGradientBoosting, medians (the schema's rule)", hgb(), medians),
        ("HistGradientBoosting, missingness pattern and categories only", hgb(), pattern),
        ("XGBoost defaults, missing values native", boost(), X),
        ("XGBoost defaults, medians", boost(), medians),
        ("HistGradientBoosting, medians, min_samples_leaf=1", hgb(min_samples_leaf=1), medians),
        ("HistGradientBoosting, medians, min_samples_leaf=5", hgb(min_samples_leaf=5), medians),
        ("XGBoost lr 0.05 depth 4 100 rounds, medians, min_child_weight=1", sized(1), medians),
        ("XGBoost lr 0.05 depth 4 100 rounds, medians, min_child_weight=10", sized(10), medians),
    ):
        proba = out_of_fold(make, table, ds.labels, folds, k)
        r = bootstrap_interval(ds.labels, proba, ds.groups, metric=macro_auroc, n_boot=1000, seed=args.seed)
        print(f"{name}: macro AUROC {r['point']:.3f} [{r['low']:.3f}, {r['high']:.3f}]", flush=True)


if __name__ == "__main__":
    main()
