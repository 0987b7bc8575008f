"""What the PET's voxel values mean, and SUVbw when the header allows it.

The body-weight SUV follows the QIBA FDG-PET/CT profile's vendor-neutral SUV calculation: for Units BQML,
decay-corrected to the series start (DecayCorrection START, CorrectedImage with ATTN and DECY),
``SUVbw = value * PatientWeight[g] / (RadionuclideTotalDose * 2^(-(scan - injection) / RadionuclideHalfLife))``,
where the scan time is the series date and time unless an acquisition started earlier (a series re-written after
the scan), then the earliest acquisition. With DecayCorrection ADMIN the dose needs no decay. Values already in
GML are SUVbw. Anything else (CNTS without a vendor factor, missing weight or dose, implausible times) leaves the
values in the PET's own unit, and the outputs say which unit that is and why SUV was not computed.

Hand-written because none of the field's maintained Python libraries (pydicom, highdicom, MONAI) computes SUV;
each rule is QIBA's, and each refusal to compute is stated, never guessed around.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass

from pydicom.dataset import Dataset

# The PET unit codes of PS3.3 C.8.9.1.1.3 and how the outputs name them.
UNIT_NAMES = {"BQML": "Bq/ml", "CNTS": "counts", "GML": "SUVbw (g/ml)", "MGMINML": "mg/min/ml",
              "UMOLMINML": "umol/min/ml", "MLMING": "ml/min/g", "MLG": "ml/g", "1CM": "1/cm", "NONE": "",
              "PCNT": "percent", "CM2ML": "cm2/ml", "PROPCNT": "proportional to counts"}
# Plausible ranges: a value outside is a header error, not a patient.
WEIGHT_KG = (0.5, 500.0)
UPTAKE_S = (0.0, 24 * 3600.0)


@dataclass(frozen=True)
class PetUnits:
    """``unit``: the DICOM Units code of the PET's values; ``suv_bw_factor``: multiplies them into SUVbw (None when
    it cannot be computed, 1.0 for GML); ``note``: how the factor was found, or why not."""

    unit: str
    suv_bw_factor: float | None
    note: str

    @property
    def display_unit(self) -> str:
        """What values multiplied by ``display_factor`` are in."""
        return "SUVbw" if self.suv_bw_factor is not None else (UNIT_NAMES.get(self.unit) or self.unit or "no unit")

    @property
    def display_factor(self) -> float:
        return 1.0 if self.suv_bw_factor is None else self.suv_bw_factor

    @property
    def output_units_code(self) -> str:
        """The Units code of values multiplied by ``display_factor``."""
        return "GML" if self.suv_bw_factor is not None else (self.unit or "NONE")

    def as_dict(self) -> dict:
        return {**asdict(self), "output_unit": self.display_unit}


def _number(ds: Dataset, keyword: str) -> float | None:
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _date_time(date: str, time: str) -> dt.datetime | None:
    """A DA and a TM value as one datetime (fractions of a second kept); None when either is not valid."""
    date, time = str(date or "").strip(), str(time or "").strip()
    if len(date) != 8 or len(time) < 2:
        return None
    whole, _, fraction = time.partition(".")
    try:
        parsed = dt.datetime.strptime(date + whole.ljust(6, "0")[:6], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return parsed + dt.timedelta(seconds=float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def _date_time_value(text: str) -> dt.datetime | None:
    """A DT value (YYYYMMDDHHMMSS[.F], offsets ignored: the series times carry none either)."""
    text = str(text or "").strip().split("+")[0].split("-")[0]
    return _date_time(text[:8], text[8:]) if len(text) >= 10 else None


def pet_units(pt_datasets: list[Dataset]) -> PetUnits:
    """The unit of the PT series' values and, when the attributes allow, the SUVbw factor (QIBA, see above)."""
    first = pt_datasets[0]
    unit = str(first.get("Units", "") or "").strip().upper()

    def not_suv(reason: str) -> PetUnits:
        return PetUnits(unit or "NONE", None, f"SUVbw not computed: {reason}; values in "
                        f"{UNIT_NAMES.get(unit) or unit or 'an unstated unit (Units missing)'}")

    if unit == "GML":
        return PetUnits(unit, 1.0, "values already SUVbw (Units GML)")
    if unit != "BQML":
        return not_suv(f"Units is {unit or 'missing'}, not BQML")
    corrected = {str(v).upper() for v in first.get("CorrectedImage", [])}
    if not {"ATTN", "DECY"} <= corrected:
        return not_suv("CorrectedImage lacks ATTN or DECY")
    decay_correction = str(first.get("DecayCorrection", "")).strip().upper()
    if decay_correction not in ("START", "ADMIN"):
        return not_suv(f"DecayCorrection is {decay_correction or 'missing'}, not START or ADMIN")
    weight = _number(first, "PatientWeight")
    if weight is None or not WEIGHT_KG[0] <= weight <= WEIGHT_KG[1]:
        return not_suv("PatientWeight missing or implausible")
    info = first.get("RadiopharmaceuticalInformationSequence")
    if not info:
        return not_suv("no RadiopharmaceuticalInformationSequence")
    info = info[0]
    dose, half_life = _number(info, "RadionuclideTotalDose"), _number(info, "RadionuclideHalfLife")
    if not dose or dose <= 0 or not half_life or half_life <= 0:
        return not_suv("RadionuclideTotalDose or RadionuclideHalfLife missing or not positive")
    if decay_correction == "ADMIN":
        decayed_dose, how = dose, "decay-corrected to administration"
    else:
        series = _date_time(first.get("SeriesDate"), first.get("SeriesTime"))
        acquisitions = [t for t in (_date_time(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))
                                    for ds in pt_datasets) if t is not None]
        if series is None:
            return not_suv("SeriesDate or SeriesTime missing or invalid")
        scan = series if not acquisitions or series <= min(acquisitions) else min(acquisitions)
        injection = _date_time_value(info.get("RadiopharmaceuticalStartDateTime", "")) or \
            _date_time(first.get("SeriesDate"), info.get("RadiopharmaceuticalStartTime"))
        if injection is None:
            return not_suv("RadiopharmaceuticalStartDateTime and RadiopharmaceuticalStartTime missing or invalid")
        uptake = (scan - injection).total_seconds()
        if not UPTAKE_S[0] <= uptake <= UPTAKE_S[1]:
            return not_suv(f"injection to scan time of {uptake:.0f} s is implausible")
        decayed_dose = dose * 2.0 ** (-uptake / half_life)
        how = f"dose decayed over {uptake:.0f} s to the scan start"
    factor = weight * 1000.0 / decayed_dose
    return PetUnits(unit, factor, f"SUVbw = Bq/ml x {factor:.6g} (QIBA: body weight, {how})")
