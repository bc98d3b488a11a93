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

from fusion.allocator import tune_allocator
from fusion.classifier import FusionClassifier
from fusion.cli import fail, output_file
from fusion.persistence import to_json


def read_record(value: str) -> dict:
    """A record from a JSON object string or a JSON file path.

    Text that starts with ``{`` is JSON; anything else names a file (so a long inline
    record is never mistaken for a file name, and a missing file is reported as one).

    Raises
    ------
    ValueError
        Not a JSON object, or a file that is missing, unreadable or not a JSON object.
    """
    inline = value.lstrip().startswith("{")
    where = "--record" if inline else f"--record file {value!r}"
    if inline:
        text = value
    else:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(
                f"--record {value!r}: no such file (give a JSON object such as '{{\"age\": 61}}' or a file holding one)"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: cannot be read ({err})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where} is not valid JSON ({err}); give a JSON object such as '{{\"age\": 61}}' or a file holding one"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a JSON object keyed by feature name; got a JSON {type(record).__name__}")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fusion.predict", description="Classify one patient from an X-ray and/or a clinical record."
    )
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--image", help="X-ray file (PNG, JPEG or DICOM)")
    p.add_argument("--record", help="clinical record: a JSON object string or a JSON file")
    p.add_argument(
        "--explain", metavar="OUT.png", help="also explain the prediction and write the figure to this new .png file"
    )
    p.add_argument("--target", help="class to explain (default: the predicted one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    tune_allocator()
    figure, output_error = None, None
    if args.explain:
        # Checked before the work, reported after the answer: a bad output path never
        # costs the prediction, and nothing is written over an input.
        inline = args.record is None or args.record.lstrip().startswith("{")
        try:
            figure = output_file(
                args.explain,
                "--explain",
                inputs=[args.model, args.image, None if inline else args.record],
                suffix=".png",
            )
        except ValueError as err:
            output_error = f"error: {err}"
    try:
        clf = FusionClassifier.load(args.model)
        record = read_record(args.record) if args.record else None
        prediction = clf.predict(record, args.image)
        explanation = clf.explain(record, args.image, target=args.target) if figure else None
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(err, p)
    if explanation is not None:
        try:
            explanation.save(figure)
        except OSError as err:
            output_error, figure = f"error: could not write the figure {str(figure)!r}: {err.strerror or err}", None
    print_prediction(prediction, explanation, figure, as_json=args.json)
    if output_error:
        print(output_error, file=sys.stderr)
        return 2
    return 0


def print_prediction(prediction, explanation, figure: Path | None, *, as_json: bool) -> None:
    """The answer, and the explanation's summary and figure path when there is one."""
    if as_json:
        out = {
            "label": prediction.label,
            "probabilities": prediction.probabilities,
            "modalities": list(prediction.modalities),
            "above_threshold": list(prediction.above_threshold),
        }
        if explanation is not None:
            out["explanation"] = {**explanation.to_dict(), "figure": str(figure) if figure else None}
        print(to_json(out))
        return
    print(f"{prediction.label}  (from {' + '.join(prediction.modalities)})")
    for name, p_ in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14}{p_:.3f}")
    if prediction.above_threshold:
        print(f"above the operating point (not to rule out): {', '.join(prediction.above_threshold)}")
    if explanation is not None:
        shares = ", ".join(f"{m} {s:.0%}" for m, s in explanation.modality_share.items())
        print(f"explanation for {explanation.target}: modality share {shares}")
        for name, value in explanation.top_features(5):
            print(f"  {name:<20}{value:+.3f}")
        if figure:
            print(f"figure written to {figure}")


if __name__ == "__main__":
    sys.exit(main())
