"""Write a synthetic folder dataset of any size: films as PNG files plus metadata.csv.

The embedded synthetic cohort lives in memory; a hospital's data lives in a folder of
image files with a table. This script writes the second from the first, at the size
you ask for, so that what happens to a folder larger than memory (the image cache on
disk, memory use and throughput of training from it) can be measured without
patient data:

    python experiments/make_folder.py --n 60000 --out /tmp/cxr60k --workers 2
    python -m fusion.train --data /tmp/cxr60k --image-size 224 --epochs 1

The folder holds ``metadata.csv`` (patient id, image file, diagnosis and the
clinical record, as ``data/schema/synthetic.toml`` describes them), ``images/*.png``
(8-bit grayscale, ``--film-size`` px) and a copy of that schema as ``schema.toml``,
so ``--data`` needs no ``--schema``. Films are rendered at ``--render-size`` and
resized to ``--film-size`` (rendering is the slow part; the loader resizes them
again to the model's size, as it would real films). The data are synthetic, not
medical. Blocks of films are written by ``--workers`` processes; each block is its
own seeded cohort, so the folder is the same for the same arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fusion.data import synthetic

BLOCK = 500  # films per unit of work (and per seeded cohort)
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "schema" / "synthetic.toml"


def write_block(out: str, block: int, n: int, seed: int, render: int, film: int) -> list[dict]:
    """Render block ``block`` (``n`` films) and write its PNGs; its table rows."""
    table, images = synthetic.make_cohort(n, seed=seed * 100_003 + block, image_size=render)
    rows = []
    for record, pixels in zip(table.to_dict("records"), images, strict=True):
        # Patient ids are per block: prefix them so patients never merge across blocks.
        patient = f"B{block:04d}{record['patient_id']}"
        name = f"{patient}_{record['image'].split('_', 1)[1]}"
        picture = Image.fromarray(pixels)
        if film != render:
            picture = picture.resize((film, film), Image.Resampling.BILINEAR)
        picture.save(Path(out) / "images" / name, compress_level=1)
        rows.append({**record, "patient_id": patient, "image": name})
    return rows


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, required=True, help="number of films")
    p.add_argument("--out", required=True, help="new (or empty) folder to write")
    p.add_argument("--film-size", type=int, default=256, help="side of each PNG in pixels")
    p.add_argument("--render-size", type=int, default=128, help="side the films are rendered at before resizing")
    p.add_argument("--workers", type=int, default=1, help="processes writing films")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be at least 1; got {args.n}")
    if args.workers < 1:
        p.error(f"--workers must be at least 1; got {args.workers}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        p.error(f"--out {out} exists and is not empty; give a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    sizes = [min(BLOCK, args.n - start) for start in range(0, args.n, BLOCK)]
    jobs = [(str(out), b, n, args.seed, args.render_size, args.film_size) for b, n in enumerate(sizes)]
    t0 = time.perf_counter()
    rows: list[dict] = []
    if args.workers == 1:
        for job in jobs:
            rows.extend(write_block(*job))
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            for block_rows in pool.map(write_block, *zip(*jobs, strict=True)):
                rows.extend(block_rows)
    seconds = time.perf_counter() - t0
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    (out / "schema.toml").write_text(SCHEMA.read_text(encoding="utf-8"), encoding="utf-8")
    png_bytes = sum(f.stat().st_size for f in (out / "images").iterdir())
    summary = {
        "films": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
        "film_size": args.film_size,
        "png_gb": round(png_bytes / 1e9, 3),
        "seconds": round(seconds, 1),
        "films_per_s": round(len(rows) / seconds, 1),
        "workers": args.workers,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
