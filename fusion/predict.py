"""Ask a trained model about one patient: ``python -m fusion.predict``.

Examples
--------
python -m fusion.predict --model runs/demo --image xray.png --record '{"age": 61, "spo2": 89}'
python -m fusion.predict --model runs/demo --image xray.dcm --record patient.json --explain why.png --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusion.classifier import FusionClassifier
from fusion.training import tune_allocator


def read_record(value: str) -> dict:
    """A record from a JSON file path or a JSON string.

    Raises
    ------
    ValueError
        Neither a readable JSON file nor a JSON object string.
    """
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"file {value!r}" if path.is_file() else "--record"
        raise ValueError(f"{where} is not valid JSON ({err}); give a JSON object such as '{{\"age\": 61}}' or a file holding one") from None
    if not isinstance(record, dict):
        raise ValueError(f"--record must be a JSON object keyed by feature name; got {type(record).__name__}")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusion.predict", description="Classify one patient from an X-ray and/or a clinical record.")
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--image", help="X-ray file (PNG, JPEG or DICOM)")
    p.add_argument("--record", help="clinical record: a JSON file or a JSON string")
    p.add_argument("--explain", metavar="OUT.png", help="also explain the prediction and write the figure here")
    p.add_argument("--target", help="class to explain (default: the predicted one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    tune_allocator()
    try:
        clf = FusionClassifier.load(args.model)
        record = read_record(args.record) if args.record else None
        prediction = clf.predict(record, args.image)
        explanation = clf.explain(record, args.image, target=args.target) if args.explain else None
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if explanation is not None:
        explanation.save(args.explain)
    if args.json:
        out = {"label": prediction.label, "probabilities": prediction.probabilities, "modalities": list(prediction.modalities)}
        if explanation is not None:
            out["explanation"] = {**explanation.to_dict(), "figure": args.explain}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{prediction.label}  (from {' + '.join(prediction.modalities)})")
    for name, p_ in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14}{p_:.3f}")
    if explanation is not None:
        shares = ", ".join(f"{m} {s:.0%}" for m, s in explanation.modality_share.items())
        print(f"explanation for {explanation.target}: modality share {shares}")
        for name, value in explanation.top_features(5):
            print(f"  {name:<20}{value:+.3f}")
        print(f"figure written to {args.explain}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
