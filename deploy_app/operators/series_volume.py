"""One selected DICOM series to a volume: the SDK's converter, told which series to use and checked."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from monai.deploy.core import OperatorSpec
from monai.deploy.core.domain import StudySelectedSeries
from monai.deploy.operators import DICOMSeriesToVolumeOperator

from ..errors import FusionInputError
from .dicom_study_loader import UNUSABLE_MEMBERS

logger = logging.getLogger(__name__)

# Neighbouring slice positions may differ by this fraction of the median spacing before the series is called
# gapped: scanners write positions with 6 or so significant digits.
SPACING_TOLERANCE = 0.01
# A slice may be offset within its plane from the series' first by at most this share of a pixel: scanners write
# positions to a thousandth of a millimetre, and the SDK places every slice by the first one's in-plane origin.
IN_PLANE_TOLERANCE_PIXELS = 0.05
# A slice whose largest value is this many times the typical slice maximum of its series is a broken header.
MAX_SLICE_OVER_TYPICAL = 100


LEFT_OUT_IMAGE_TYPES = ("LOCALIZER", "SCOUT", "DERIVED", "SECONDARY")


def _series_facts(series) -> dict:
    """What the selection rules below read of one series: image types, orientations, slice thickness, 3D or 2D,
    series number and time."""
    datasets = [inst.get_native_sop_instance() for inst in series.get_sop_instances()]
    image_types, orientations = set(), {}
    for ds in datasets:
        image_types |= {str(v).upper() for v in ds.get("ImageType", [])}
        cosines = _floats(ds, "ImageOrientationPatient", 6)
        if cosines is not None:
            key = tuple(np.round(cosines, 3))
            orientations[key] = orientations.get(key, 0) + 1
    # A localizer holds several planes, none with most of the images; one odd slice in a series is not that
    # (the consistency check then refuses the series, naming the slice's file).
    multi_plane = len(orientations) > 1 and max(orientations.values()) < 0.8 * len(datasets)
    first = datasets[0] if datasets else {}
    thickness = (_scalar(first, "SliceThickness", float("inf")) or float("inf")) if datasets else float("inf")
    return {"images": len(datasets), "image_types": image_types, "orientations": len(orientations),
            "multi_plane": multi_plane,
            "thickness": thickness if thickness and thickness > 0 else float("inf"),
            "is_3d": str(first.get("MRAcquisitionType", "")).upper() == "3D",
            "number": int(_scalar(first, "SeriesNumber", 0) or 0) if datasets else 0,
            "description": str(first.get("SeriesDescription", "")) if datasets else "",
            "time": f"{first.get('SeriesDate', '')}{first.get('SeriesTime', '')}" if datasets else ""}


def choose_series(selections: list[StudySelectedSeries] | None, label: str):
    """Pick the series to use from everything the selector matched, by stated rules, each decision logged.

    Left out (reason logged): localizers, scouts, derived and secondary series (ImageType LOCALIZER, SCOUT,
    DERIVED or SECONDARY) and series whose images have several orientations (a 3-plane localizer). Of the rest:
    the most images, then the thinnest slices, then a 3D acquisition, then the highest series number, then the
    latest series date and time, then the Series Instance UID (so that the choice never depends on file order).
    Returns ``(StudySelectedSeries, SelectedSeries)``.
    """
    candidates = []
    for study_sel in selections or []:
        for sel in study_sel.selected_series:
            facts = _series_facts(sel.series)
            uid = sel.series.SeriesInstanceUID
            kinds = sorted(facts["image_types"] & set(LEFT_OUT_IMAGE_TYPES))
            if kinds:
                logger.info("%s series %s left out: ImageType %s", label, uid, "/".join(kinds))
            elif facts["multi_plane"]:
                logger.info("%s series %s left out: its images have %d orientations (a localizer)", label, uid,
                            facts["orientations"])
            else:
                candidates.append((study_sel, sel, facts))
    if not candidates:
        raise FusionInputError(f"no {label} series in the input matches the selection rules")

    def rank(c):
        f = c[2]
        return (-f["images"], f["thickness"], not f["is_3d"], -f["number"], not f["time"], _negated(f["time"]),
                c[1].series.SeriesInstanceUID)

    candidates.sort(key=rank)
    study_sel, chosen, facts = candidates[0]
    for _, other, other_facts in candidates[1:]:
        # Two series of one number and description: a copy, or images whose Series Instance UID was damaged (a
        # lost first or last slice would leave no gap to see). Which images belong together cannot be told.
        if (other_facts["number"], other_facts["description"]) == (facts["number"], facts["description"]):
            example = file_name(other.series.get_sop_instances()[0].get_native_sop_instance())
            raise FusionInputError(f"{label} series {chosen.series.SeriesInstanceUID} and {other.series.SeriesInstanceUID} "
                                   f"(e.g. {example}) have the same series number {facts['number']} and description: "
                                   "a damaged Series Instance UID or a copy; which images belong together cannot be told")
    if len(candidates) > 1:
        others = ", ".join(f"{c[1].series.SeriesInstanceUID} ({c[2]['images']} images)" for c in candidates[1:])
        logger.info("%d %s series match the rules '%s'; using %s (%d images, slices %.2f mm%s, series number %d), "
                    "not %s; rules: most images, thinnest slices, 3D, highest series number, latest, UID",
                    len(candidates), label, chosen.selection_name, chosen.series.SeriesInstanceUID, facts["images"],
                    facts["thickness"], ", 3D" if facts["is_3d"] else "", facts["number"], others)
    return study_sel, chosen


def _negated(text: str) -> tuple:
    """A sort key that puts later date-time strings first."""
    return tuple(-ord(ch) for ch in text)


def file_name(ds) -> str:
    """The file a dataset was read from (pydicom keeps it), or its SOP Instance UID."""
    return str(getattr(ds, "filename", None) or f"SOP instance {ds.get('SOPInstanceUID', '?')}")


def _floats(ds, keyword: str, count: int) -> np.ndarray | None:
    """``count`` finite numbers from ``keyword`` of ``ds``, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.asarray([float(v) for v in ds[keyword].value], dtype=float)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return values if values.shape == (count,) and np.all(np.isfinite(values)) else None


def _scalar(ds, keyword: str, default: float) -> float | None:
    """``keyword`` as a finite number; ``default`` when the attribute is absent; None when it is present but
    empty or not a finite number (the SDK would fail on it)."""
    if keyword not in ds:
        return default
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds[keyword].value
            if isinstance(raw, str):  # a number under a text VR (CS, UI...): pydicom hands it to the SDK as text
                return None
            value = float(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if np.isfinite(value) else None


def check_series_consistency(series, label: str) -> None:
    """Refuse, naming the series and the file, a series whose images do not make one volume.

    Every image must have the first one's orientation (6 finite values, orthonormal rows), pixel spacing (2
    finite values > 0), size, bit depth, signedness and photometric interpretation (MONOCHROME2; MONOCHROME1,
    a modality LUT or an inverse presentation LUT are refused, not silently misread), the same patient, study and
    Frame of Reference; positions finite and on one straight line along the slice normal; rescale slope and
    intercept finite, the slope non-zero, and no slice's largest value more than MAX_SLICE_OVER_TYPICAL times the
    typical slice maximum (per-slice PET slopes vary; a slope of 1e30 is a broken header). Runs before the SDK sorts the slices, so that it never meets
    such values.
    """
    uid = series.SeriesInstanceUID
    lost = getattr(series, UNUSABLE_MEMBERS, [])
    if lost:
        raise FusionInputError(f"{label} series {uid} is incomplete: {lost[0]} belongs to it and cannot be used"
                               + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""))
    datasets = [inst.get_native_sop_instance() for inst in series.get_sop_instances()]
    if not datasets:
        raise FusionInputError(f"{label} series {uid} has no images")
    first = datasets[0]

    def refuse(ds, problem: str):
        raise FusionInputError(f"{label} series {uid}: {file_name(ds)} {problem}")

    cosines = _floats(first, "ImageOrientationPatient", 6)
    spacing = _floats(first, "PixelSpacing", 2)
    for ds in datasets:
        orientation = _floats(ds, "ImageOrientationPatient", 6)
        if orientation is None:
            refuse(ds, "has no valid ImageOrientationPatient (6 finite values)")
        row, col = orientation[:3], orientation[3:]
        if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
            refuse(ds, "has an ImageOrientationPatient that is not two orthogonal unit vectors")
        if cosines is None or np.abs(orientation - cosines).max() > 1e-4:
            refuse(ds, "is oriented differently from the series' first image (a rotated slice, or a localizer)")
        pixel_spacing = _floats(ds, "PixelSpacing", 2)
        if pixel_spacing is None or np.any(pixel_spacing <= 0):
            refuse(ds, "has no valid PixelSpacing (2 finite values > 0)")
        if spacing is None or np.abs(pixel_spacing - spacing).max() > 1e-4 * spacing.max():
            refuse(ds, "has another PixelSpacing than the series' first image")
        if _floats(ds, "ImagePositionPatient", 3) is None:
            refuse(ds, "has no valid ImagePositionPatient (3 finite values)")
        if ds.get("PhotometricInterpretation") != "MONOCHROME2":
            refuse(ds, f"has PhotometricInterpretation {ds.get('PhotometricInterpretation')!r}: only MONOCHROME2 is read")
        for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"):
            if ds.get(keyword) != first.get(keyword):
                refuse(ds, f"has another {keyword} than the series' first image")
        if "ModalityLUTSequence" in ds:
            refuse(ds, "has a Modality LUT: only a linear rescale is read")
        if ds.get("PresentationLUTShape", "IDENTITY") != "IDENTITY":
            refuse(ds, f"has PresentationLUTShape {ds.get('PresentationLUTShape')!r}: inverted grayscale is not read")
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "PatientBirthDate",
                        "IssuerOfPatientID"):
            if str(ds.get(keyword, "")) != str(first.get(keyword, "")):
                refuse(ds, f"has another {keyword} than the series' first image")  # the value is never logged

    # positions on one line along the normal: no in-plane shift
    normal = np.cross(cosines[:3], cosines[3:])
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3) for ds in datasets])
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    shift = np.linalg.norm(in_plane, axis=1)
    if shift.max() > IN_PLANE_TOLERANCE_PIXELS * float(spacing.min()):
        k = int(np.argmax(shift))
        refuse(datasets[k], f"is shifted {shift[k]:.2f} mm within the image plane from the series' first image")

    maxima = []
    for ds in datasets:
        slope, intercept = _scalar(ds, "RescaleSlope", 1.0), _scalar(ds, "RescaleIntercept", 0.0)
        if slope is None or slope == 0 or intercept is None:
            refuse(ds, "has a RescaleSlope or RescaleIntercept that is not a finite number (slope non-zero)")
        try:
            stored = ds.pixel_array
        except Exception as err:  # noqa: BLE001 - decoders raise anything; the loader has tried them already
            refuse(ds, f"has pixel data that cannot be decoded ({type(err).__name__})")
        maxima.append(slope * float(stored.max()) + intercept)
    # Per-slice slopes vary legitimately (a PET slice is scaled to its own maximum); what must not happen is a
    # slice whose values are far above the rest of the series (a slope of 1e30).
    maxima = np.asarray(maxima)
    typical = float(np.median(np.sort(maxima)[len(maxima) // 2:]))  # the brighter half: the organ's slices
    if typical > 0 and maxima.max() > MAX_SLICE_OVER_TYPICAL * typical:
        k = int(np.argmax(maxima))
        refuse(datasets[k], f"has values up to {maxima[k]:.4g} (RescaleSlope {_scalar(datasets[k], 'RescaleSlope', 1.0):.4g}), "
               f"more than {MAX_SLICE_OVER_TYPICAL} times the series' typical slice maximum {typical:.4g}")


class SeriesVolumeOperator(DICOMSeriesToVolumeOperator):
    """``DICOMSeriesToVolumeOperator`` for one of the two series the fusion needs.

    Named input:
        study_selected_series_list: what a ``DICOMSeriesSelectorOperator`` (``all_matched=True``) emits.
    Named outputs:
        image: ``Image`` with voxels [D, H, W] (slice, row, column) in real-world units and metadata whose
            ``affine`` maps (column, row, slice) indices to RAS patient coordinates in mm.
        series: the ``DICOMSeries`` the image came from, its instances sorted along the slice normal.

    Refuses, naming the series, a series whose slices are not evenly spaced (a missing or duplicated
    slice): the SDK would silently stretch it between its first and last positions.
    """

    def __init__(self, fragment, *args, label: str, **kwargs):
        self.label = label
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        super().setup(spec)
        spec.output("series")

    def compute(self, op_input, op_output, context):
        study_selected, selected = choose_series(op_input.receive(self.input_name_series), self.label)
        only_chosen = StudySelectedSeries(study_selected.study)
        only_chosen.add_selected_series(selected)
        image = self.convert_to_image([only_chosen])
        op_output.emit(image, self.output_name_image)
        op_output.emit(selected.series, "series")

    def prepare_series(self, series):
        check_series_consistency(series, self.label)
        super().prepare_series(series)
        instances = series.get_sop_instances()
        uid = series.SeriesInstanceUID
        if len(instances) < 3:
            raise FusionInputError(f"{self.label} series {uid} has {len(instances)} images: a volume needs at least 3")
        steps = np.diff([s.distance for s in instances])
        median = float(np.median(steps))
        if median <= 0 or np.any(np.abs(steps - median) > SPACING_TOLERANCE * median):
            worst = int(np.argmax(np.abs(steps - median)))
            raise FusionInputError(
                f"{self.label} series {uid} is not evenly spaced: slices {worst + 1} and {worst + 2} (of "
                f"{len(instances)}) are {steps[worst]:.3f} mm apart, the others {median:.3f} mm; a slice is missing "
                "or duplicated")

    # SDK 4.0 scales the row direction cosine by PixelSpacing[0]. DICOM PS3.3 C.7.6.2.1.1 gives PixelSpacing as
    # (row spacing, column spacing): the step along a row (the row cosine) is PixelSpacing[1]. The two agree for
    # square pixels only; the SDK's slice axis and origin are right and are kept.
    def compute_affine_transform(self, s_1, s_n, n, series):
        super().compute_affine_transform(s_1, s_n, n, series)
        first = s_1.get_native_sop_instance()
        cosines = np.asarray(first.ImageOrientationPatient, dtype=float)
        row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
        lps = np.array(getattr(series, self.ATTRIBUTE_DICOM_AFFINE), dtype=float)
        lps[:3, 0] = cosines[:3] * column_spacing
        lps[:3, 1] = cosines[3:] * row_spacing
        setattr(series, self.ATTRIBUTE_DICOM_AFFINE, lps)
        setattr(series, self.ATTRIBUTE_NIFTI_AFFINE, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
