"""PET units and SUVbw (QIBA FDG profile's vendor-neutral calculation) from the PT header."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deploy_app.pet_units import pet_units

F18_HALF_LIFE_S = 6586.2


def pt_header(**changes) -> Dataset:
    """A PT image header as scanners write it: BQML, decay-corrected to the series start, 70 kg, 370 MBq injected
    at 08:00:00, series at 09:00:00 (acquisition at the same time)."""
    ds = Dataset()
    ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY", "SCAT"]
    ds.PatientWeight = "70"
    ds.SeriesDate, ds.SeriesTime = "20240314", "090000"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240314", "090000"
    info = Dataset()
    info.RadionuclideTotalDose, info.RadionuclideHalfLife = "370000000", str(F18_HALF_LIFE_S)
    info.RadiopharmaceuticalStartTime = "080000"
    ds.RadiopharmaceuticalInformationSequence = Sequence([info])
    for keyword, value in changes.items():
        if keyword.startswith("info_"):
            setattr(info, keyword[5:], value)
        elif value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def suv_factor(weight_kg: float, dose_bq: float, uptake_s: float) -> float:
    return weight_kg * 1000.0 / (dose_bq * 2.0 ** (-uptake_s / F18_HALF_LIFE_S))


def test_suvbw_from_series_time_start_time_and_weight():
    units = pet_units([pt_header()])
    assert units.unit == "BQML" and units.display_unit == "SUVbw" and units.output_units_code == "GML"
    assert units.suv_bw_factor == pytest.approx(suv_factor(70, 370e6, 3600), rel=1e-9)
    # RadiopharmaceuticalStartDateTime, when present, wins over the start time (an injection before midnight)
    overnight = pet_units([pt_header(info_RadiopharmaceuticalStartDateTime="20240313233000")])
    assert overnight.suv_bw_factor == pytest.approx(suv_factor(70, 370e6, 9.5 * 3600), rel=1e-9)


def test_series_time_after_the_acquisition_uses_the_earliest_acquisition():
    # A series re-written after the scan (SeriesTime later than the acquisitions): QIBA takes the earliest acquisition.
    slices = [pt_header(SeriesTime="120000", AcquisitionTime=t) for t in ("091000", "090500", "091500")]
    assert pet_units(slices).suv_bw_factor == pytest.approx(suv_factor(70, 370e6, 3900), rel=1e-9)


def test_decay_corrected_to_administration_needs_no_decay():
    units = pet_units([pt_header(DecayCorrection="ADMIN")])
    assert units.suv_bw_factor == pytest.approx(70000 / 370e6, rel=1e-9)


def test_values_already_in_gml_are_suv():
    units = pet_units([pt_header(Units="GML")])
    assert units.suv_bw_factor == 1.0 and units.display_unit == "SUVbw"


@pytest.mark.parametrize("changes, reason", [
    ({"Units": "CNTS"}, "Units is CNTS"),
    ({"PatientWeight": None}, "PatientWeight missing"),
    ({"PatientWeight": "0"}, "PatientWeight missing or implausible"),
    ({"CorrectedImage": ["ATTN"]}, "lacks ATTN or DECY"),
    ({"DecayCorrection": "NONE"}, "DecayCorrection is NONE"),
    ({"info_RadionuclideTotalDose": "0"}, "RadionuclideTotalDose"),
    ({"SeriesTime": "1"}, "SeriesDate or SeriesTime"),
    ({"info_RadiopharmaceuticalStartTime": "100000"}, "implausible"),  # injected after the scan
    ({"RadiopharmaceuticalInformationSequence": Sequence([])}, "no RadiopharmaceuticalInformationSequence"),
])
def test_without_what_suv_needs_the_values_keep_their_unit_and_say_why(changes, reason):
    units = pet_units([pt_header(**changes)])
    assert units.suv_bw_factor is None and units.display_factor == 1.0
    assert reason in units.note and "SUVbw not computed" in units.note
    expected_unit = changes.get("Units", "BQML")
    assert units.output_units_code == expected_unit
    assert units.display_unit == {"BQML": "Bq/ml", "CNTS": "counts"}[expected_unit]
