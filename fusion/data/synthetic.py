"""The embedded default: a synthetic multimodal chest X-ray cohort, generated in memory.

This is a *demonstration* dataset, not medical data. It exists so the main job and the
tests run anywhere without files, and it is built so that the two modalities
complement each other the way they do in the clinic:

- the **image** shows *which* disease when it is visible (COVID-19: bilateral,
  peripheral, hazy ground-glass opacities in the lower zones; bacterial pneumonia: one
  dense, sharply bounded focal consolidation; normal: clear lungs), but early or mild
  disease is often invisible on the film;
- the **record** shows *that* a patient is ill (fever, low SpO2, high CRP) but tells the
  two infections apart only loosely (COVID-19: lymphopenia, normal or low white count;
  bacterial pneumonia: neutrophilia, high fever, very high CRP), with realistic missing
  laboratory values.

The two are drawn independently given the class, so neither alone is enough and a
fused model is clearly better than either. Some patients have several images
(follow-up films) with one record per image.

Example
-------
>>> from fusion.data import synthetic
>>> record, image = synthetic.example(seed=0)
>>> sorted(record)[:3], image.size
(['age', 'crp', 'days_since_onset'], (128, 128))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd

CLASSES = ("covid", "pneumonia", "normal")
# Size of the embedded cohort that the main job and ``load_dataset(None)`` use.
DEFAULT_N = 2000
CLASS_PRIORS = (0.4, 0.3, 0.3)
# Raw diagnosis strings as a hospital export would write them; the schema maps them.
RAW_LABELS = {"covid": "COVID-19", "pneumonia": "Bacterial pneumonia", "normal": "No Finding"}
# Share of diseased films on which the disease is too faint or early to see.
INVISIBLE_SHARE = 0.3
# Probability that a laboratory value was not measured, by class (normals get fewer labs).
MISSING_RATES = {
    "temperature": (0.08, 0.08, 0.15),
    "spo2": (0.05, 0.05, 0.10),
    "wbc": (0.20, 0.20, 0.35),
    "lymphocytes": (0.25, 0.25, 0.40),
    "crp": (0.35, 0.35, 0.50),
    "days_since_onset": (0.10, 0.10, 0.20),
}
FEATURES = ("age", "sex", "temperature", "spo2", "wbc", "lymphocytes", "crp", "days_since_onset", "view")


def _patient_record(cls: int, rng: np.random.Generator) -> dict:
    """Per-patient attributes that do not change between visits."""
    age_mean = (58.0, 62.0, 45.0)[cls]
    return {
        "age": float(np.clip(rng.normal(age_mean, 16.0), 18, 95).round()),
        "sex": "M" if rng.random() < (0.55, 0.5, 0.45)[cls] else "F",
        # How abnormal this patient's laboratory values are (independent of the film).
        "lab_severity": float(rng.beta(2.0, 2.0)),
        "onset": float(rng.gamma(2.0, 3.0)),
    }


def _visit_record(cls: int, patient: dict, visit: int, rng: np.random.Generator) -> dict:
    """One clinical record, drawn from class-conditional physiology with overlap."""
    s = patient["lab_severity"]
    if cls == 0:  # COVID-19: lymphopenia, hypoxaemia out of proportion, moderate CRP
        temperature = rng.normal(37.6 + 0.9 * s, 0.6)
        spo2 = rng.normal(96.0 - 6.0 * s, 2.0)
        wbc = np.exp(rng.normal(np.log(6.8), 0.4))
        lymph = np.exp(rng.normal(np.log(1.4 - 0.6 * s), 0.4))
        crp = np.exp(rng.normal(np.log(30 + 60 * s), 0.8))
    elif cls == 1:  # bacterial pneumonia: neutrophilia, high fever, high CRP
        temperature = rng.normal(37.8 + 0.9 * s, 0.6)
        spo2 = rng.normal(96.0 - 5.0 * s, 2.0)
        wbc = np.exp(rng.normal(np.log(8.0 + 5.0 * s), 0.4))
        lymph = np.exp(rng.normal(np.log(1.45 - 0.2 * s), 0.4))
        crp = np.exp(rng.normal(np.log(40 + 90 * s), 0.8))
    else:  # normal: a patient imaged for a cough or a check, values in the normal range
        temperature = rng.normal(36.9 + 0.3 * s, 0.45)
        spo2 = rng.normal(97.6 - 0.6 * s, 1.2)
        wbc = np.exp(rng.normal(np.log(6.8), 0.28))
        lymph = np.exp(rng.normal(np.log(2.0), 0.35))
        crp = np.exp(rng.normal(np.log(4.0 + 8 * s), 0.8))
    record = {
        "age": patient["age"],
        "sex": patient["sex"],
        "temperature": round(float(np.clip(temperature, 34.5, 42.0)), 1),
        "spo2": round(float(np.clip(spo2, 70.0, 100.0)), 0),
        "wbc": round(float(np.clip(wbc, 1.0, 40.0)), 1),
        "lymphocytes": round(float(np.clip(lymph, 0.1, 6.0)), 2),
        "crp": round(float(np.clip(crp, 0.5, 400.0)), 1),
        "days_since_onset": float(round(patient["onset"] + 3.0 * visit)),
        "view": "AP" if rng.random() < (0.45, 0.35, 0.15)[cls] else "PA",
    }
    for name, rates in MISSING_RATES.items():
        if rng.random() < rates[cls]:
            record[name] = None
    return record


def _anatomy(rng: np.random.Generator) -> dict:
    """Per-patient body habitus and film placement (shared by follow-up films)."""
    return {
        "cx": rng.normal(0.0, 0.04),
        "cy": rng.normal(0.02, 0.04),
        "scale": rng.uniform(0.85, 1.08),
        "lung_w": rng.uniform(0.26, 0.32),
        "lung_h": rng.uniform(0.46, 0.54),
        "heart": rng.uniform(0.18, 0.24),
        "tilt": rng.normal(0.0, 0.04),
    }


def _render(cls: int, anatomy: dict, severity: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one frontal chest film as float32 in [0, 1], shape (size, size)."""
    lin = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    sc = anatomy["scale"]
    x = (xx - anatomy["cx"]) / sc
    y = (yy - anatomy["cy"]) / sc
    x, y = x + anatomy["tilt"] * y, y - anatomy["tilt"] * x

    def soft_ellipse(cx, cy, rx, ry, edge=0.08):
        d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        return np.clip((1.0 - d) / edge, 0.0, 1.0)

    body = soft_ellipse(0.0, 0.15, 0.92, 1.15, 0.15)
    img = 0.06 + 0.40 * body
    lw, lh = anatomy["lung_w"], anatomy["lung_h"]
    # Lung fields, cut below by the domes of the diaphragm.
    dome = 0.36 + 0.9 * (np.abs(x) - 0.36) ** 2
    below = np.clip((y - dome) / 0.05, 0.0, 1.0)
    lungs = np.maximum(soft_ellipse(-0.36, -0.1, lw, lh, 0.25), soft_ellipse(0.36, -0.1, lw, lh, 0.25))
    lungs = lungs * (1.0 - below)
    img = img - 0.30 * lungs
    # Ribs: bright arcs across both lung fields.
    ribs = np.zeros_like(img)
    for k in range(7):
        y0 = -0.42 + 0.13 * k
        arc = y0 + 0.35 * (np.abs(x) - 0.35) ** 2 - 0.05
        ribs += np.exp(-(((y - arc) / 0.018) ** 2))
    img = img + 0.07 * ribs * (0.4 + 0.6 * lungs)
    # Mediastinum, spine and heart shadow (bulging to the patient's left, image right).
    img = img + 0.20 * soft_ellipse(0.0, -0.1, 0.12, 0.75, 0.5)
    h = anatomy["heart"]
    img = img + 0.28 * soft_ellipse(0.1, 0.24, h * 1.4, h, 0.35)
    # Below the diaphragm: soft tissue of the abdomen.
    img = img + 0.12 * body * below

    if cls == 0 and severity > 0:
        # Bilateral, peripheral, lower-zone ground glass: several broad, faint blobs.
        for side in (-1.0, 1.0):
            for _ in range(rng.integers(2, 4)):
                bx = side * rng.uniform(0.42, 0.55)
                by = rng.uniform(0.0, 0.3)
                r = rng.uniform(0.10, 0.17)
                blob = np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * r * r)))
                img = img + severity * rng.uniform(0.09, 0.15) * blob * lungs
    elif cls == 1 and severity > 0:
        # One dense lobar consolidation with a sharp border, in one lung.
        side = rng.choice((-1.0, 1.0))
        bx = side * rng.uniform(0.22, 0.42)
        by = rng.uniform(-0.25, 0.25)
        rx, ry = rng.uniform(0.08, 0.14), rng.uniform(0.08, 0.16)
        d = np.sqrt(((x - bx) / rx) ** 2 + ((y - by) / ry) ** 2)
        blob = np.clip((1.2 - d) / 0.3, 0.0, 1.0)
        img = img + severity * rng.uniform(0.28, 0.38) * blob * lungs

    # Confounders every film can have: a small nodule, a poor-inspiration haze.
    if rng.random() < 0.15:
        nx, ny = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)
        img = img + 0.18 * np.exp(-(((x - nx) ** 2 + (y - ny) ** 2) / (2 * 0.025**2))) * lungs
    if rng.random() < 0.2:
        img = img + rng.uniform(0.03, 0.07) * lungs * np.clip(y + 0.5, 0, 1)

    # Exposure, contrast and detector noise.
    img = (img - 0.2) * rng.uniform(0.85, 1.2) + 0.2 + rng.normal(0.0, 0.04)
    img = img + rng.normal(0.0, rng.uniform(0.015, 0.04), size=img.shape).astype(np.float32)
    gamma = rng.uniform(0.8, 1.25)
    return np.clip(img, 0.0, 1.0) ** gamma


def _severity(cls: int, rng: np.random.Generator) -> float:
    if cls == 2 or rng.random() < INVISIBLE_SHARE:
        return 0.0 if cls == 2 else rng.uniform(0.0, 0.15)
    return float(rng.uniform(0.45, 1.0))


def make_cohort(n: int = DEFAULT_N, seed: int = 0, image_size: int = 128) -> tuple[pd.DataFrame, np.ndarray]:
    """Generate ``n`` (record, image) pairs from about ``0.75 n`` patients.

    Parameters
    ----------
    n : int
        Number of images (and records).
    seed : int
        Same seed, same cohort (bit for bit).
    image_size : int
        Side of the square images in pixels (at least 16).

    Returns
    -------
    table : pandas.DataFrame
        ``patient_id``, ``image`` (a file-like name), ``diagnosis`` (the raw label,
        see ``data/schema/synthetic.toml``) and the features; missing values are None.
    images : numpy.ndarray
        uint8, shape (n, image_size, image_size), row-aligned with ``table``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16; got {image_size!r}")
    rng = np.random.default_rng(seed)
    rows, images = [], []
    patient = 0
    while len(rows) < n:
        cls = int(rng.choice(len(CLASSES), p=CLASS_PRIORS))
        person = _patient_record(cls, rng)
        anatomy = _anatomy(rng)
        visits = 1 if rng.random() < 0.78 else int(rng.integers(2, 4))
        severity = _severity(cls, rng)
        for visit in range(min(visits, n - len(rows))):
            if visit and severity > 0:  # disease evolves between follow-up films
                severity = float(np.clip(severity + rng.normal(0.0, 0.2), 0.0, 1.0))
            record = _visit_record(cls, person, visit, rng)
            image = _render(cls, anatomy, severity, image_size, rng)
            rows.append(
                {
                    "patient_id": f"P{patient:05d}",
                    "image": f"P{patient:05d}_{visit}.png",
                    "diagnosis": RAW_LABELS[CLASSES[cls]],
                    **record,
                }
            )
            images.append(np.round(image * 255.0).astype(np.uint8))
        patient += 1
    import pandas as pd

    return pd.DataFrame(rows), np.stack(images)


def example(seed: int = 0, image_size: int = 128) -> tuple[dict, Image.Image]:
    """One (record, image) pair for documentation and tests.

    Returns
    -------
    record : dict
        Feature name -> value (None when missing), without the label.
    image : PIL.Image.Image
        Grayscale ("L") image of ``image_size`` x ``image_size`` pixels.
    """
    table, images = make_cohort(1, seed=seed, image_size=image_size)
    record = {}
    for name in FEATURES:
        value = table.loc[0, name]
        value = value.item() if isinstance(value, np.generic) else value
        record[name] = None if value is None or (isinstance(value, float) and np.isnan(value)) else value
    return record, Image.fromarray(images[0])
