import numpy as np
import pytest

from fusion.data import synthetic
from fusion.schema import load_schema


def test_same_seed_same_cohort_bit_for_bit():
    t1, i1 = synthetic.make_cohort(40, seed=7, image_size=32)
    t2, i2 = synthetic.make_cohort(40, seed=7, image_size=32)
    assert t1.equals(t2)
    np.testing.assert_array_equal(i1, i2)
    _, i3 = synthetic.make_cohort(40, seed=8, image_size=32)
    assert not np.array_equal(i1, i3)


def test_class_balance_patients_and_missing_values():
    table, images = synthetic.make_cohort(600, seed=0, image_size=32)
    assert images.shape == (600, 32, 32) and images.dtype == np.uint8
    shares = table["diagnosis"].value_counts(normalize=True)
    assert set(shares.index) == set(synthetic.RAW_LABELS.values())
    assert shares.min() > 0.2 and shares.max() < 0.5
    per_patient = table.groupby("patient_id").size()
    assert per_patient.max() >= 2 and (per_patient == 1).mean() > 0.5  # some patients have several films
    assert table.groupby("patient_id")["diagnosis"].nunique().max() == 1
    assert table["crp"].isna().mean() > 0.2  # realistic missing labs
    assert table["age"].notna().all()


def test_cohort_passes_its_schema():
    table, _ = synthetic.make_cohort(200, seed=1, image_size=32)
    result = load_schema("synthetic").validate_table(table.astype(object).where(table.notna(), ""))
    assert result.skipped == []
    assert len(result.labels) == 200


def test_classes_differ_in_physiology_and_in_the_image():
    table, images = synthetic.make_cohort(900, seed=2, image_size=64)
    by = table.groupby("diagnosis")
    assert by["lymphocytes"].median()["COVID-19"] < by["lymphocytes"].median()["No Finding"]
    assert by["wbc"].median()["Bacterial pneumonia"] > by["wbc"].median()["No Finding"]
    assert by["temperature"].median()["No Finding"] < 37.5
    # Opacities brighten the lung fields of diseased films on average.
    lungs = images[:, 16:44, 6:58].reshape(len(images), -1).mean(1)
    normal = lungs[table["diagnosis"] == "No Finding"].mean()
    assert lungs[table["diagnosis"] == "COVID-19"].mean() > normal
    assert lungs[table["diagnosis"] == "Bacterial pneumonia"].mean() > normal


def test_example_returns_record_and_pil_image():
    record, image = synthetic.example(seed=0, image_size=48)
    assert set(record) == set(synthetic.FEATURES)
    assert image.mode == "L" and image.size == (48, 48)
    load_schema("synthetic").validate_record(record)


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 10, "image_size": 8}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic.make_cohort(**kwargs)
