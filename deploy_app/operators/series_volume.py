"""One selected DICOM series to a volume: the SDK's converter, told which series to use and checked."""

from __future__ import annotations

import logging

import numpy as np

from monai.deploy.core import OperatorSpec
from monai.deploy.core.domain import StudySelectedSeries
from monai.deploy.operators import DICOMSeriesToVolumeOperator

from ..errors import FusionInputError

logger = logging.getLogger(__name__)

# Neighbouring slice positions may differ by this fraction of the median spacing before the series is called
# gapped: scanners write positions with 6 or so significant digits.
SPACING_TOLERANCE = 0.01


def choose_series(selections: list[StudySelectedSeries] | None, label: str):
    """Pick the series to use from everything the selector matched: the one with the most images.

    Returns ``(StudySelectedSeries, SelectedSeries)``. Logs the choice when more than one series matched, so
    that a site can see (and tighten its rules) when a study holds e.g. several T1 series.
    """
    candidates = [(study_sel, sel) for study_sel in (selections or []) for sel in study_sel.selected_series]
    if not candidates:
        raise FusionInputError(f"no {label} series in the input matches the selection rules")
    candidates.sort(key=lambda c: len(c[1].series.get_sop_instances()), reverse=True)
    chosen = candidates[0]
    if len(candidates) > 1:
        others = ", ".join(f"{c[1].series.SeriesInstanceUID} ({len(c[1].series.get_sop_instances())} images)"
                           for c in candidates[1:])
        logger.info("%d %s series match the rules '%s'; using %s (%d images), not %s", len(candidates), label,
                    chosen[1].selection_name, chosen[1].series.SeriesInstanceUID,
                    len(chosen[1].series.get_sop_instances()), others)
    return chosen


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
