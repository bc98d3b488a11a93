"""Ask a trained model about one patient: ``python -m fusion.predict``.

Examples
--------
python -m fusion.predict --model runs/demo --image xray.png --record '{"age": 61, "spo2": 89}'
python -m fusion.predict --model runs/demo --image xray.dcm --record patient.json --explain why.png --json
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from fusion.allocator import tune_allocator
from fusion.classifier import FusionClassifier
from fusion.cli import add_verbosity_arguments, fail, log_to_terminal, output_file, verbosity
from fusion.persistence import to_json
from fusion.schema import MAX_RECORD_BYTES, parse_record_json, short_repr


def read_record(value: str) -> dict:
    """A record from a JSON object string or a JSON file path.

    Text that starts with ``{`` is JSON; anything else names a file (so a long inline
    record is never mistaken for a file name, and a missing file is reported as one).
    Either is parsed by :func:`fusion.schema.parse_record_json` (size, nesting and
    repeated keys checked); a file must be a regular file, checked before it is opened
    (``/dev/zero`` would be read until memory runs out, a FIFO would block), and is
    read no further than the size limit.

    Raises
    ------
    ValueError
        Not a JSON object, or a file that is missing, not a regular file, unreadable,
        too large or not a JSON object.
    """
    inline = value.lstrip().startswith("{")
    where = "--record" if inline else f"--record file {short_repr(value)}"
    text = value if inline else _read_record_file(value, where)
    record = parse_record_json(text, origin=where)
    if record is None:
        raise ValueError(f"{where} is empty; give a JSON object such as '{{\"age\": 61}}' or a file holding one")
    return record


def _read_record_file(value: str, where: str) -> bytes:
    """The bytes of a record file: a regular file, at most one byte over the limit read
    (enough for :func:`parse_record_json` to refuse it by its size)."""
    try:
        kind = stat.S_IFMT(os.stat(value).st_mode)
    except FileNotFoundError:
        raise ValueError(
            f"{where}: no such file (give a JSON object such as '{{\"age\": 61}}' or a file holding one)"
        ) from None
    except (OSError, ValueError) as err:  # a symlink loop, a name too long, a NUL in it
        raise ValueError(f"{where}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    if kind == stat.S_IFDIR:
        raise ValueError(f"{where} is a folder; give a JSON file or a JSON object such as '{{\"age\": 61}}'")
    if kind != stat.S_IFREG:
        raise ValueError(f"{where} is not a regular file (a device, pipe or socket); give a JSON file")
    try:
        # O_NONBLOCK: should the name become a FIFO after the check, opening it does not wait.
        fd = os.open(value, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ValueError(f"{where} is not a regular file (a device, pipe or socket); give a JSON file")
            return fh.read(MAX_RECORD_BYTES + 1)
    except OSError as err:
        raise ValueError(f"{where}: cannot be read ({err.strerror or err})") from None


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.predict") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Classify one patient from an X-ray and/or a clinical record.")
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--image", help="X-ray file (PNG, JPEG, TIFF, BMP, GIF or DICOM)")
    p.add_argument("--record", help="clinical record: a JSON object string or a JSON file")
    p.add_argument(
        "--explain", metavar="OUT.png", help="also explain the prediction and write the figure to this new .png file"
    )
    p.add_argument("--target", help="class to explain (default: the predicted one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_verbosity_arguments(p, quiet="print the answer, warnings and errors only")
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
        with log_to_terminal(verbosity(args)):
            clf = FusionClassifier.load(args.model)
            record = read_record(args.record) if args.record else None
            prediction = clf.predict(record, args.image)
            explanation = clf.explain(record, args.image, target=args.target) if figure else None
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(err, p, verbose=verbosity(args) > 0)
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


_FLAGS = {"image": "--image", "tabular": "--record"}


def print_prediction(prediction, explanation, figure: Path | None, *, as_json: bool) -> None:
    """The answer, and the explanation's summary and figure path when there is one; a
    note on stderr for an input the model does not use (JSON: ``ignored``)."""
    for modality in prediction.ignored:
        print(
            f"note: {_FLAGS[modality]} was checked but not used: this model has no {modality} modality",
            file=sys.stderr,
        )
    if as_json:
        out = prediction.to_dict()
        if explanation is not None:
            out["explanation"] = {**explanation.to_dict(), "figure": str(figure) if figure else None}
        print(to_json(out))
        return
    print(f"{prediction.label}  (from {' + '.join(prediction.modalities)})")
    for name, p_ in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14}{p_:.3f}")
    if prediction.above_threshold:
        print(f"above the operating point (not to rule out): {', '.join(prediction.above_threshold)}")
    if prediction.prediction_set is not None:
        kept = ", ".join(prediction.prediction_set)
        print(f"cannot rule out ({prediction.coverage:.0%} prediction set): {kept}")
    if explanation is not None:
        shares = ", ".join(f"{m} {s:.0%}" for m, s in explanation.modality_share.items())
        print(f"explanation for {explanation.target}: modality share {shares}")
        for name, value in explanation.top_features(5):
            print(f"  {name:<20}{value:+.3f}")
        if figure:
            print(f"figure written to {figure}")


if __name__ == "__main__":
    sys.exit(main())
