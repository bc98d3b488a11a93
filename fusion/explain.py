"""Explanations over both modalities, with Captum.

For one patient, :meth:`FusionClassifier.explain <fusion.classifier.FusionClassifier.explain>`
answers three questions a clinician asks of a prediction:

- *where on the film?* ``image_attribution``: Integrated Gradients over the pixels, an
  H x W map (positive = evidence for the target class; a colour image's three channels
  summed, so a pixel's evidence is the sum of its channels');
- *which values in the record?* ``tabular_attribution``: Integrated Gradients over the
  preprocessed features, summed back onto the schema's features (a one-hot group or a
  missing-value indicator counts for its feature);
- *how much did each modality matter?* ``modality_share``: each modality's Shapley
  value on the target's *log-odds*, from removing the modalities in both orders
  (:func:`modality_shares`). A modality is removed exactly as a missing input is (every
  backend answers with a modality missing), and log-odds, unlike a probability, keep
  moving when the probability is already near 1, so a record that visibly moves the
  decision never gets a share of 0 behind a saturated image.

Both inputs are attributed in one Integrated Gradients call (Captum takes the tuple
``(image, tabular)`` and returns a tuple), against a neutral baseline: a uniform film
at the training images' mean intensity (a colour image: each channel's mean, a uniform
patch of the average colour) and a record at the training means with nothing missing.
Attributions are of the target class's probability, so a feature's value reads as
"raised (or lowered) the probability by about this much".

The XGBoost baseline is explained with XGBoost's own exact tree SHAP contributions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.persistence import atomic_write

DEFAULT_STEPS = 50


@dataclass(kw_only=True)
class Explanation:
    """Why the model decided, for one patient.

    Attributes
    ----------
    target : str
        The class explained (by default the predicted one).
    probability : float
        Its probability.
    probabilities : dict of str -> float
    modality_share : dict of str -> float
        Each modality's share of the decision; sums to 1.
    image_attribution : numpy.ndarray or None
        (H, W) float, at the model's input size; None without an image.
    tabular_attribution : dict of str -> float, or None
        Signed attribution per schema feature; None without a record.
    image : numpy.ndarray or None
        The image as the model saw it: uint8 (H, W), or (H, W, 3) for a colour model.
    record : dict or None
        The validated record values.
    method : str
    ignored : tuple of str
        Inputs given that the model has no modality for (see
        :attr:`fusion.classifier.Prediction.ignored`).
    """

    target: str
    probability: float
    probabilities: dict[str, float]
    modality_share: dict[str, float]
    image_attribution: np.ndarray | None = None
    tabular_attribution: dict[str, float] | None = None
    image: np.ndarray | None = None
    record: dict | None = None
    method: str = "integrated_gradients"
    units: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    def top_features(self, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` record features with the largest absolute attribution."""
        if not self.tabular_attribution:
            return []
        return sorted(self.tabular_attribution.items(), key=lambda kv: -abs(kv[1]))[:k]

    def to_dict(self) -> dict:
        """JSON-ready summary (the pixel map is summarised, not listed)."""
        out = {
            "target": self.target,
            "probability": self.probability,
            "probabilities": self.probabilities,
            "modality_share": self.modality_share,
            "method": self.method,
            "tabular_attribution": self.tabular_attribution,
        }
        if self.image_attribution is not None:
            a = self.image_attribution
            out["image_attribution"] = {
                "shape": list(a.shape),
                "sum": float(a.sum()),
                "max": float(a.max()),
                "min": float(a.min()),
            }
        return out

    def save(self, path: str | Path) -> Path:
        """One PNG a clinician can read: the film with the heatmap, the top record
        drivers, the modality shares and the probabilities.

        Raises
        ------
        OSError
            The file cannot be written (missing or read-only folder).
        """
        from matplotlib.figure import Figure

        path = Path(path)
        fig = Figure(figsize=(11, 8))
        grid = fig.add_gridspec(2, 2, height_ratios=(3, 1.3), width_ratios=(1, 1.15))
        ax_img = fig.add_subplot(grid[0, 0])
        ax_tab = fig.add_subplot(grid[0, 1])
        ax_prob = fig.add_subplot(grid[1, 0])
        ax_share = fig.add_subplot(grid[1, 1])
        self._draw_image(ax_img)
        self._draw_record(ax_tab)
        classes = list(self.probabilities)
        colours = ["C3" if c == self.target else "C7" for c in classes]
        ax_prob.barh(classes, [self.probabilities[c] for c in classes], color=colours)
        ax_prob.set_xlim(0, 1)
        ax_prob.invert_yaxis()
        ax_prob.set_title("Predicted probabilities")
        for i, c in enumerate(classes):
            ax_prob.text(min(self.probabilities[c] + 0.02, 0.9), i, f"{self.probabilities[c]:.2f}", va="center")
        left = 0.0
        for i, (m, s) in enumerate(self.modality_share.items()):
            ax_share.barh([0], [s], left=left, color=f"C{i}", label=f"{m} {s:.0%}")
            if s > 0.08:
                ax_share.text(
                    left + s / 2, 0, f"{m}\n{s:.0%}", ha="center", va="center", color="white", fontweight="bold"
                )
            left += s
        ax_share.set_xlim(0, 1)
        ax_share.set_yticks([])
        ax_share.set_title("Share of the decision by modality")
        ax_share.set_xlabel("Shapley value of each modality on the log-odds of the prediction, normalised")
        fig.suptitle(f"Prediction: {self.target} (p = {self.probability:.2f})", fontsize=14, fontweight="bold")
        fig.tight_layout()
        # PNG whatever the name says, written whole or not at all, at exactly ``path``.
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        return path

    def _draw_image(self, ax) -> None:
        ax.set_xticks([])
        ax.set_yticks([])
        colour = self.image is not None and self.image.ndim == 3
        name = "Image" if colour else "Chest X-ray"
        if self.image is None:
            ax.text(0.5, 0.5, "no image given", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(name)
            return
        if colour:  # the colour image as it is: its colours are part of the evidence
            ax.imshow(self.image)
        else:
            ax.imshow(self.image, cmap="gray", vmin=0, vmax=255)
        heat = smooth(np.clip(self.image_attribution, 0, None))
        if heat.max() > 0:
            heat = heat / heat.max()
            ax.imshow(np.ma.masked_less(heat, 0.15), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{name}: evidence for {self.target}")

    def _draw_record(self, ax) -> None:
        top = self.top_features(8)
        if not top:
            ax.text(0.5, 0.5, "no record given", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title("Clinical record")
            return
        labels = []
        for name, _ in top:
            value = (self.record or {}).get(name)
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            unit = self.units.get(name, "")
            labels.append(
                f"{name} = missing"
                if missing
                else f"{name} = {value:g} {unit}".strip()
                if isinstance(value, (int, float))
                else f"{name} = {value}"
            )
        values = [v for _, v in top]
        ax.barh(labels, values, color=["C3" if v > 0 else "C0" for v in values])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_xlabel(f"effect on p({self.target})  (red: for, blue: against)")
        ax.set_title("Clinical record: top drivers")


def smooth(a: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur of a 2-D map, so pixel-level attribution noise reads as regions."""
    sigma = sigma or max(a.shape) / 48
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    a = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 0, a)
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, a)


def log_odds(p: float) -> float:
    """log(p / (1 - p)), with p kept inside (1e-12, 1 - 1e-12)."""
    p = min(max(float(p), 1e-12), 1.0 - 1e-12)
    return float(np.log(p) - np.log1p(-p))


def modality_shares(value: Callable[[frozenset], float], modalities: tuple[str, ...], present) -> dict[str, float]:
    """Each modality's share of one decision: its Shapley value on the target's log-odds.

    Parameters
    ----------
    value : callable
        ``value(S)``: the target's log-odds when only the modalities in ``S`` (a
        frozenset) are given, the others removed as missing inputs are.
    modalities : tuple of str
        The model's modalities.
    present : iterable of str
        Those given for this patient; an absent one gets share 0.

    Returns
    -------
    dict of str -> float
        Non-negative, summing to 1: ``|phi_m| / sum |phi|``. With two modalities
        ``phi_image = ((v(I) - v()) + (v(I, T) - v(T))) / 2`` (both orders of
        removal), and ``phi_image + phi_tabular = v(I, T) - v()``. Equal shares when
        neither moves the log-odds.
    """
    present = [m for m in modalities if m in set(present)]
    if len(present) < 2:
        return {m: float(m in present) for m in modalities}
    memo: dict[frozenset, float] = {}

    def v(subset) -> float:
        key = frozenset(subset)
        if key not in memo:
            memo[key] = value(key)
        return memo[key]

    phi = {}
    for m in present:
        others = [o for o in present if o != m]
        # Average marginal contribution over every order (two players: two orders).
        total, count = 0.0, 0
        for r in range(len(others) + 1):
            for before in itertools.combinations(others, r):
                weight = math.factorial(r) * math.factorial(len(present) - r - 1)
                total += weight * (v({*before, m}) - v(before))
                count += weight
        phi[m] = total / count
    norm = sum(abs(x) for x in phi.values())
    if norm < 1e-12:
        return {m: (1.0 / len(present) if m in present else 0.0) for m in modalities}
    return {m: (abs(phi[m]) / norm if m in phi else 0.0) for m in modalities}


@dataclass(kw_only=True)
class NetworkAttribution:
    """What :func:`explain_network` finds for one sample, in the network's own terms
    (class indices, preprocessed columns); backends turn it into an
    :class:`Explanation` in the user's terms.

    Attributes
    ----------
    target : int
        Index of the explained class.
    probabilities : numpy.ndarray
        (n_classes,) float64.
    image_attribution : numpy.ndarray or None
        (H, W), the channels summed.
    tabular_attribution : numpy.ndarray or None
        (n_columns,), one value per preprocessed column.
    modality_share : dict of str -> float
    """

    target: int
    probabilities: np.ndarray
    image_attribution: np.ndarray | None
    tabular_attribution: np.ndarray | None
    modality_share: dict[str, float]


def explain_network(
    model, inputs: dict, target: int | None, *, image_mean=None, n_steps: int = DEFAULT_STEPS
) -> NetworkAttribution:
    """Attributions of a :class:`fusion.nets.joint.FusionModel` for one sample.

    Parameters
    ----------
    model : FusionModel
        Run as it is, without autocast: pass an :func:`~fusion.nets.joint.inference_copy`
        to explain in bf16 (a heatmap needs no more precision than the prediction it
        explains, which runs the same copy).
    inputs : dict of modality -> tensor of batch 1, or None
    target : int or None
        Class index; None explains the most probable class.
    image_mean : float, torch.Tensor or None
        Intensity of the neutral baseline film: a float, or the image branch's ``mean``
        buffer (a scalar, or (C, 1, 1): one intensity per colour channel).
    n_steps : int
        Integrated Gradients steps.
    """
    import torch
    from captum.attr import IntegratedGradients

    model.eval()
    present = [m for m in model.modalities if inputs.get(m) is not None]
    tensors = tuple(inputs[m].float() for m in present)

    def forward(*xs):
        full = dict.fromkeys(model.modalities)
        full.update(zip(present, xs, strict=True))
        return torch.softmax(model(full).float(), dim=1)

    with torch.no_grad():
        proba = forward(*tensors)[0]
    k = int(proba.argmax()) if target is None else int(target)
    baselines = tuple(
        _uniform_like(x, image_mean) if m == "image" else torch.zeros_like(x)
        for m, x in zip(present, tensors, strict=True)
    )
    pixels = tensors[present.index("image")][0].numel() if "image" in present else 0
    # One batch of all steps is fastest for small inputs; large images are split so
    # the interpolated batch stays in cache.
    internal = n_steps if pixels <= 96 * 96 else 10
    attributions = IntegratedGradients(forward).attribute(
        tensors, baselines=baselines, target=k, n_steps=n_steps, internal_batch_size=internal
    )
    found = {m: a.detach().float().cpu().numpy()[0] for m, a in zip(present, attributions, strict=True)}
    given = dict(zip(present, tensors, strict=True))

    def value(subset: frozenset) -> float:
        presence = torch.tensor([[float(m in subset) for m in model.modalities]], device=tensors[0].device)
        with torch.no_grad():
            return log_odds(torch.softmax(model(given, presence=presence).float(), dim=1)[0, k])

    share = modality_shares(value, model.modalities, present)
    return NetworkAttribution(
        target=k,
        probabilities=proba.cpu().numpy().astype(np.float64),
        image_attribution=found["image"].sum(axis=0) if "image" in found else None,
        tabular_attribution=found.get("tabular"),
        modality_share=share,
    )


def _uniform_like(x, mean):
    """A baseline image of ``x``'s shape at ``mean``: a float, or a buffer of one value
    per channel, (C, 1, 1), which broadcasts over (batch, C, H, W)."""
    import torch

    if isinstance(mean, torch.Tensor):
        return torch.zeros_like(x) + mean.to(device=x.device, dtype=x.dtype)
    return torch.full_like(x, mean)


def sum_by_source(values: np.ndarray, sources: list[str], names) -> dict[str, float]:
    """Sum column attributions onto their features (one-hot groups, indicators)."""
    out = dict.fromkeys(names, 0.0)
    for v, s in zip(values, sources, strict=True):
        out[s] += float(v)
    return out


def embedding_attribution(branch, image, readout, *, n_steps: int = DEFAULT_STEPS) -> np.ndarray:
    """Integrated Gradients over the pixels of a readout of an image embedding.

    For the late-fusion backends, whose image evidence enters through a frozen
    backbone's embedding: ``readout(embedding) -> (batch,)`` is what the decision reads
    from the embedding (the stacked model's own path to the target's log-odds, or a
    linear stand-in for the trees of the gbm model). The baseline is a uniform film at
    the branch's mean intensity, as for the network.

    Parameters
    ----------
    branch : ImageBranch
        Frozen.
    image : torch.Tensor
        (1, C, H, W) in [0, 1].
    readout : callable
    n_steps : int

    Returns
    -------
    numpy.ndarray
        (H, W), the channels summed.
    """
    import torch
    from captum.attr import IntegratedGradients

    def forward(x):
        return readout(branch(x).float())

    baseline = _uniform_like(image, branch.mean)
    internal = n_steps if image[0].numel() <= 96 * 96 else 10
    with torch.enable_grad():
        a = IntegratedGradients(forward).attribute(
            image, baselines=baseline, n_steps=n_steps, internal_batch_size=internal
        )
    return a.detach().float().cpu().numpy()[0].sum(axis=0)
