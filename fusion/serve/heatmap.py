"""The film with its heatmap, as the PNG the page shows.

Drawn with Pillow and numpy rather than matplotlib: the service answers one figure per
request, and matplotlib's import and figure machinery would cost more than the
explanation itself. The colours follow the library's figure (``Explanation.save``):
the positive Integrated Gradients evidence, smoothed into regions, normalised to its
maximum, shown where it exceeds 15 % of it, in an inferno-like ramp at half opacity.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fusion.explain import smooth

# Anchor colours of matplotlib's "inferno" (at 0, 0.25, 0.5, 0.75, 1), interpolated.
_RAMP = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
    dtype=np.float64,
)
SHOWN_ABOVE = 0.15
OPACITY = 0.5


def heatmap_png(image: np.ndarray, attribution: np.ndarray | None, *, side: int = 320) -> bytes:
    """A PNG of the uint8 ``image``, (H, W) gray or (H, W, 3) colour (shown in its own
    colours), with ``attribution``'s positive part (H, W) over it, enlarged to at least
    ``side`` px (the model may see 32 px: too small to look at)."""
    pixels = image.astype(np.float64)
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    if attribution is not None:
        heat = smooth(np.clip(np.asarray(attribution, dtype=np.float64), 0, None))
        if heat.max() > 0:
            heat = heat / heat.max()
            stops = np.linspace(0.0, 1.0, len(_RAMP))
            colour = np.stack([np.interp(heat, stops, _RAMP[:, c]) for c in range(3)], axis=-1)
            alpha = np.where(heat >= SHOWN_ABOVE, OPACITY, 0.0)[..., None]
            rgb = (1 - alpha) * rgb + alpha * colour
    picture = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    scale = max(1, -(-side // max(picture.size)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
