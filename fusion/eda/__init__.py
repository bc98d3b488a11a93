"""Exploratory analysis of a dataset before any model sees it: ``python -m fusion.eda``.

Real clinical collections fail in ways a metric never shows: a class that is a handful
of films, measurements that only some sources report (so that *whether* a value is
present tells the diagnosis), provenance columns that name the source and thus the
label, patients with films in several classes. This package measures those things for
any schema'd dataset (a folder with ``metadata.csv`` and images, or an image-only
``.npz`` in MedMNIST layout) and writes PNG figures with a ``report.md`` that links
them, plus ``summary.json`` with the warnings for scripts.

The analysis functions are plain and reusable: they take tables and label arrays and
return DataFrames; the plotting functions draw on ``matplotlib.figure.Figure``
directly, so no pyplot state or backend is touched.

Modules
-------
analysis
    Class balance, missingness, skipped rows, patients, duplicate images.
leaks
    Columns whose values or presence nearly determine the label.
figures
    The PNG figures (matplotlib is imported only when one is drawn).
sections
    The report's sections: each measures, draws and adds its Markdown and warnings.
output
    The output folder: never an input; a rerun removes only what an earlier analysis
    recorded writing there (``.fusion-eda.json``).
report
    :func:`run_eda`: loading, the output folder, ``report.md`` and ``summary.json``.
cli
    :func:`main`, the command line; the only module that prints.

Example
-------
>>> from fusion.eda import run_eda
>>> report = run_eda("../shared/data/covid-chestxray", "covid_chestxray", "eda_covid")  # doctest: +SKIP
>>> report.name  # doctest: +SKIP
'report.md'

Command line::

    python -m fusion.eda --data ../shared/data/covid-chestxray --schema covid_chestxray --out eda_covid
    python -m fusion.eda --data ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz \\
        --schema pneumoniamnist --out eda_pmnist
"""

from fusion.eda.analysis import (
    class_balance,
    duplicate_images,
    images_per_patient,
    missingness_by_class,
    predictive_missingness,
    skipped_summary,
)
from fusion.eda.cli import main
from fusion.eda.figures import (
    plot_class_balance,
    plot_feature_distributions,
    plot_images_per_patient,
    plot_intensity,
    plot_missingness,
    plot_sample_grid,
)
from fusion.eda.leaks import leak_candidates
from fusion.eda.report import run_eda

__all__ = [
    "class_balance",
    "duplicate_images",
    "images_per_patient",
    "leak_candidates",
    "main",
    "missingness_by_class",
    "plot_class_balance",
    "plot_feature_distributions",
    "plot_images_per_patient",
    "plot_intensity",
    "plot_missingness",
    "plot_sample_grid",
    "predictive_missingness",
    "run_eda",
    "skipped_summary",
]
