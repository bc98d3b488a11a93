"""What a user gives a fitted model, turned into a validated :class:`~fusion.backends.base.Batch`.

The estimator takes one patient or many in the same two arguments:

- one patient: a record (a dict or pandas Series keyed by the schema's feature names;
  a missing key is a missing value) and/or one image;
- many patients: a table (a DataFrame or a list of records) and/or a list (or a
  stacked uint8 array) of images, row-aligned.

Every input is validated whether or not the model uses it: a record against the
schema, an image by decoding it. An input of a modality the model lacks (an image
given to a tabular-only model) is then reported as ignored, never dropped unseen:
:attr:`Prediction.ignored <fusion.prediction.Prediction.ignored>` for one patient, a
``UserWarning`` for many. A record without one known value is a missing modality, not
a record of imputed averages: a fused model answers from the image alone (its presence
mask switches the record off).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fusion.backends.base import Batch
from fusion.data.images import MIN_SIDE, load_image
from fusion.errors import FusionError, InputError
from fusion.schema import is_missing, records_frame

if TYPE_CHECKING:
    from fusion.schema import Schema

# What a user gives for each modality, as warnings name it.
_GIVEN = {"image": "image(s)", "tabular": "record(s)"}


def is_single_image(image: Any) -> bool:
    """One image rather than a batch of them: anything but a list, tuple or array of
    images. A 3-D array is one image when its last axis holds colour channels (1, 3 or
    4: no film is under 8 px a side), a batch of 2-D images otherwise."""
    if isinstance(image, (list, tuple)):
        return False
    if isinstance(image, np.ndarray):
        return image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4))
    return True


def is_one_patient(X: Any, images: Any) -> bool:
    """The one-patient form: a record that is not a table (a dict, a Series, or a value
    of the wrong type, which then fails as a record), or no record and one image."""
    if X is not None:
        return not (_is_frame(X) or isinstance(X, (list, tuple)))
    return images is None or is_single_image(images)


def _is_frame(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame implies pandas was imported: never import it here
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _check_image(image: Any) -> None:
    """Decode an image that the model will not use, so that what is refused where
    images are used (garbage bytes, a missing file, a bomb) is refused here too rather
    than passed over unseen; the pixels are dropped."""
    load_image(image, MIN_SIDE)


def _has_value(values: Mapping[str, Any]) -> bool:
    return any(not is_missing(v) for v in values.values())


@dataclass(frozen=True)
class Inputs:
    """What one fitted model accepts, and the validation of what it is given.

    Attributes
    ----------
    modalities : tuple of str
        The model's modalities.
    schema : Schema or None
        Records are validated against it even when the model does not read them; None
        for image-only data without a schema.
    image_size : int or None
        The side images are decoded to; None without the image modality.
    image_channels : int
        The channels they are decoded to: 1 (gray) or 3 (colour).
    """

    modalities: tuple[str, ...]
    schema: Schema | None
    image_size: int | None
    image_channels: int = 1

    def one(self, record, image) -> tuple[Batch, tuple[str, ...], tuple[str, ...]]:
        """One patient's inputs, validated: a batch of one, the modalities used and
        those given but not the model's (:attr:`Prediction.ignored
        <fusion.prediction.Prediction.ignored>`).

        The record is prepared before the image is decoded: whatever runs after a
        decode finds the caches full of pixels, so only the network should.
        """
        values = self.record_values(record) if record is not None else None
        # A record without one known value says nothing: it is a missing modality, not a
        # record of imputed averages (which would claim a patient with average values).
        has_record = values is not None and _has_value(values)
        use_record = has_record and "tabular" in self.modalities
        use_image = image is not None and "image" in self.modalities
        self._check_given(use_record, use_image)
        records = {n: [values[n]] for n in self.schema.feature_names} if use_record else None
        pixels = self._load(image)[None] if use_image else None
        if image is not None and not use_image:
            _check_image(image)
        used = tuple(m for m, on in (("image", use_image), ("tabular", use_record)) if on)
        return Batch(images=pixels, records=records), used, self._unused(has_record, image is not None)

    def many(self, table, images) -> tuple[Batch, tuple[str, ...]]:
        """Many patients' inputs, validated, and the modalities given but not the
        model's; rows whose record holds no known value answer from their image (the
        presence mask switches the record off for them)."""
        records = has_record = None
        values = self.table_values(table) if table is not None else None
        if values is not None:
            has_record = np.array([_has_value(v) for v in values], dtype=bool)
            if has_record.any() and "tabular" in self.modalities:
                records = records_frame(self.schema, {n: [v[n] for v in values] for n in self.schema.feature_names})
        pixels = None
        if images is not None:
            images = images if isinstance(images, np.ndarray) else list(images)
            if "image" not in self.modalities:
                for img in images:
                    _check_image(img)
            elif len(images):
                pixels = np.stack([self._load(img) for img in images])
        self._check_given(records is not None, pixels is not None)
        if values is not None and images is not None and len(values) != len(images):
            raise InputError(
                f"table has {len(values)} rows but {len(images)} images were given",
                value=len(images),
                accepted=f"{len(values)} images, one per row",
            )
        presence = None
        if records is not None and not has_record.all():
            if pixels is None:
                raise InputError(
                    f"record {int(np.flatnonzero(~has_record)[0])} has no known value "
                    "and there is no image to answer from",
                    field="record",
                )
            presence = np.ones((len(pixels), len(self.modalities)), dtype=np.float32)
            presence[~has_record, self.modalities.index("tabular")] = 0.0
        ignored = self._unused(has_record is not None and has_record.any(), images is not None and len(images) > 0)
        return Batch(images=pixels, records=records, presence=presence), ignored

    def _load(self, image) -> np.ndarray:
        """One image as the model reads it: (S, S) gray or (S, S, 3) colour."""
        return load_image(image, self.image_size, self.image_channels)

    def record_values(self, record) -> dict[str, Any]:
        """One record validated against the schema, whether or not the model reads
        records (one it does not read is refused when bad, or reported unused, never
        dropped unseen); a model without a schema can only check it is a record."""
        if self.schema is not None:
            return self.schema.validate_record(record)
        if hasattr(record, "to_dict") and not isinstance(record, Mapping):  # a pandas Series
            record = record.to_dict()
        if not isinstance(record, Mapping):
            raise TypeError(
                f"record must be a dict or pandas Series keyed by feature name; got {type(record).__name__}"
            )
        return dict(record)

    def table_values(self, table) -> list[dict[str, Any]]:
        """Every row of a table (a DataFrame or a list of records), validated."""
        if _is_frame(table):
            rows = table.to_dict("records")
        elif isinstance(table, Iterable) and not isinstance(table, (str, bytes, Mapping)):
            rows = list(table)
        else:
            raise TypeError(f"table must be a DataFrame or a list of dicts; got {type(table).__name__}")
        values = []
        for i, row in enumerate(rows):
            try:
                values.append(self.record_values(row if row is not None else {}))
            except ValueError as err:
                # The row is named in the message; the field at fault stays the error's own.
                if isinstance(err, FusionError):
                    raise InputError(
                        f"record {i}: {err}", field=err.field, value=err.value, accepted=err.accepted
                    ) from None
                raise InputError(f"record {i}: {err}", field="record") from None
        return values

    def warn_unused(self, ignored: tuple[str, ...]) -> None:
        """Answers without a :class:`~fusion.prediction.Prediction` to carry ``ignored``
        say it this way; the warning points at the estimator's caller (here, the
        classifier's ``_batch``, its public method, that method's caller)."""
        for m in ignored:
            warnings.warn(
                f"{_GIVEN[m]} not used: this model has no {m} modality (it uses {list(self.modalities)})",
                UserWarning,
                stacklevel=4,
            )

    def _check_given(self, has_record: bool, has_image: bool) -> None:
        """At least one input the model can answer from."""
        given = {"tabular": has_record, "image": has_image}
        if not any(given[m] for m in self.modalities):
            names = {"tabular": "a record", "image": "an image"}
            needed = " or ".join(names[m] for m in self.modalities)
            # About the inputs as a whole: no field.
            raise InputError(
                f"this model was trained on {list(self.modalities)} and needs {needed}; none was given",
                accepted=needed,
            )

    def _unused(self, record_given: bool, image_given: bool) -> tuple[str, ...]:
        """The modalities given that this model has none of."""
        given = {"image": image_given, "tabular": record_given}
        return tuple(m for m in ("image", "tabular") if given[m] and m not in self.modalities)
