"""Put the PT series in the MR's patient coordinates: check it is the same patient, register when the two
series have different Frames of Reference, and refuse a PET that does not overlap the MR."""

from __future__ import annotations

import logging
import time

import numpy as np
import SimpleITK as sitk
import torch

from monai.data import MetaTensor
from monai.deploy.core import Operator, OperatorSpec

from ..errors import FusionInputError
from .fused_series_writer import check_source_headers
from ..fusion_inputs import AlignedPair
from ..pet_units import pet_units

logger = logging.getLogger(__name__)

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Attributes that must agree for the MR and the PET to be the same person's (compared, never logged).
PATIENT_ATTRIBUTES = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")
# Below this share of the PET's brain signal inside the MR's field of view the two do not overlap.
MIN_FIELD_OF_VIEW_OVERLAP = 0.5
# After registration at least this share of the PET's brain signal must fall on the MR's head, and the
# rotation found must stay below MAX_ROTATION_DEG: a head does not turn further between two sessions in a
# head holder, and a registration that says so has locked onto the wrong structure.
MIN_HEAD_OVERLAP_AFTER_REGISTRATION = 0.7
MAX_ROTATION_DEG = 30.0
REGISTRATION_FINEST_MM = 2.0
# A registration still iterating after this long has lost its way (a brain pair takes seconds): it is stopped and
# the study refused rather than left running.
REGISTRATION_TIME_LIMIT_S = 120.0


def first_dataset(series):
    return series.get_sop_instances()[0].get_native_sop_instance()


def check_same_patient(mr_series, pt_series) -> None:
    """Refuse MR and PT series whose patient attributes differ; the message names the attributes only."""
    mr, pt = first_dataset(mr_series), first_dataset(pt_series)
    differing = [k for k in PATIENT_ATTRIBUTES if str(mr.get(k, "")).strip() != str(pt.get(k, "")).strip()]
    if differing:
        raise FusionInputError(
            f"MR series {mr_series.SeriesInstanceUID} and PT series {pt_series.SeriesInstanceUID} belong to "
            f"different patients ({', '.join(differing)} differ): refusing to fuse them")


def lps_affine(image) -> np.ndarray:
    """The (column, row, slice) -> LPS mm affine of an SDK ``Image`` made by ``SeriesVolumeOperator``."""
    return RAS_FROM_LPS @ np.asarray(image.metadata()["affine"], dtype=float)


def to_sitk(voxels_dhw: np.ndarray, affine_lps: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels_dhw, dtype=np.float32))
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((affine_lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(affine_lps[:3, 3].tolist())
    return image


def head_overlap(pet_dhw, pet_lps_in_mr_world, mr_dhw, mr_lps, max_points: int = 50000) -> tuple[float, float]:
    """Shares of the PET's brain signal (voxels above 20 % of its 99.5th percentile) that lie inside the MR's
    field of view, and on the MR's head (MR above 10 % of its 99th percentile). Returns (fov, head)."""
    pet_fg = np.argwhere(pet_dhw > 0.2 * np.percentile(pet_dhw, 99.5))
    if len(pet_fg) == 0:
        return 0.0, 0.0
    pet_fg = pet_fg[:: max(1, len(pet_fg) // max_points)]
    homogeneous = np.c_[pet_fg[:, ::-1], np.ones(len(pet_fg))].T  # (column, row, slice, 1)
    mr_index = np.rint((np.linalg.inv(mr_lps) @ pet_lps_in_mr_world @ homogeneous)[:3].T).astype(int)[:, ::-1]
    inside = np.all((mr_index >= 0) & (mr_index < np.array(mr_dhw.shape)), axis=1)
    on_head = np.zeros(len(mr_index), dtype=bool)
    threshold = 0.1 * np.percentile(mr_dhw, 99)
    d, h, w = mr_index[inside].T
    on_head[inside] = mr_dhw[d, h, w] > threshold
    return float(inside.mean()), float(on_head.mean())


def register_pet_to_mr(mr_dhw, mr_lps, pet_dhw, pet_lps,
                       time_limit_s: float = REGISTRATION_TIME_LIMIT_S) -> tuple[np.ndarray, dict]:
    """Rigid registration of the PET to the MR by Mattes mutual information (SimpleITK, multi-resolution).

    Returns the 4x4 LPS matrix mapping PET patient coordinates to the MR's, and what it measured. Refuses
    (``FusionInputError``) inputs that are not finite and a registration that runs past ``time_limit_s``.
    """
    for name, array in (("MR voxels", mr_dhw), ("MR geometry", mr_lps), ("PET voxels", pet_dhw),
                        ("PET geometry", pet_lps)):
        if not np.all(np.isfinite(array)):
            raise FusionInputError(f"registration refused: the {name} hold values that are not finite numbers")
    fixed, moving = to_sitk(mr_dhw, mr_lps), to_sitk(pet_dhw, pet_lps)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.05, seed=20231010)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=150,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    # The finest level stops near 2 mm voxels: the PET (6-8 mm FWHM) holds no finer detail to align, and a
    # 1 mm MR at full resolution would double the time for nothing.
    finest = max(1, int(round(REGISTRATION_FINEST_MM / float(min(fixed.GetSpacing())))))
    method.SetShrinkFactorsPerLevel([4 * finest, 2 * finest, finest])
    method.SetSmoothingSigmasPerLevel([2.0 * finest, 1.0 * finest, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    metric_before = method.MetricEvaluate(fixed, moving)
    start, overran = time.perf_counter(), []

    def stop_when_overrun():
        if time.perf_counter() - start > time_limit_s and not overran:
            overran.append(True)
            method.StopRegistration()

    method.AddCommand(sitk.sitkIterationEvent, stop_when_overrun)
    found = sitk.CompositeTransform(method.Execute(fixed, moving)).GetNthTransform(0)
    if overran:
        raise FusionInputError(f"registration of the PET to the MR did not finish within {time_limit_s:.0f} s: "
                               "refusing to fuse images whose alignment is unknown")
    method.SetInitialTransform(found, inPlace=False)
    metric_after = method.MetricEvaluate(fixed, moving)
    euler = sitk.Euler3DTransform(found)
    matrix = np.array(euler.GetMatrix()).reshape(3, 3)
    centre, translation = np.array(euler.GetCenter()), np.array(euler.GetTranslation())
    pet_from_mr = np.eye(4)
    pet_from_mr[:3, :3] = matrix
    pet_from_mr[:3, 3] = centre + translation - matrix @ centre
    rotation_deg = float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))))
    info = {"metric_before": float(metric_before), "metric_after": float(metric_after),
            "rotation_deg": rotation_deg, "iterations": int(method.GetOptimizerIteration()),
            "stop": method.GetOptimizerStopConditionDescription()}
    return np.linalg.inv(pet_from_mr), info


def to_metatensor(voxels_dhw: np.ndarray, affine_lps: np.ndarray, name: str) -> MetaTensor:
    """A channel-less (column, row, slice) MetaTensor with a RAS affine, as MONAI's readers make them."""
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(voxels_dhw.transpose(2, 1, 0), dtype=np.float32)),
                      affine=torch.as_tensor(RAS_FROM_LPS @ affine_lps, dtype=torch.float64),
                      meta={"original_channel_dim": "no_channel", "space": "RAS", "filename_or_obj": name})


class PetMrAlignmentOperator(Operator):
    """Puts the PET in the MR's patient coordinates.

    Named inputs: ``mr_image``, ``mr_series``, ``pt_image``, ``pt_series`` (from two ``SeriesVolumeOperator``).
    Named output: ``pair`` (``AlignedPair``).

    Same Frame of Reference: the PET's own geometry already places it; otherwise a rigid mutual-information
    registration does, and is refused when its result is implausible (metric not improved, rotation above
    30 degrees, or under 70 % of the PET's brain signal on the MR's head). Either way a PET with under half of
    its brain signal inside the MR's field of view is refused, as are MR and PT of different patients.
    """

    def setup(self, spec: OperatorSpec):
        for name in ("mr_image", "mr_series", "pt_image", "pt_series"):
            spec.input(name)
        spec.output("pair")

    def compute(self, op_input, op_output, context):
        mr_image, mr_series = op_input.receive("mr_image"), op_input.receive("mr_series")
        pt_image, pt_series = op_input.receive("pt_image"), op_input.receive("pt_series")
        op_output.emit(self.align(mr_image, mr_series, pt_image, pt_series), "pair")

    def align(self, mr_image, mr_series, pt_image, pt_series) -> AlignedPair:
        check_same_patient(mr_series, pt_series)
        # Whatever in the MR's header could stop the writer stops the study here, before the inference.
        check_source_headers([inst.get_native_sop_instance() for inst in mr_series.get_sop_instances()[:1]],
                             [inst.get_native_sop_instance() for inst in pt_series.get_sop_instances()[:1]])
        mr_dhw, pet_dhw = mr_image.asnumpy(), pt_image.asnumpy()
        mr_lps, pet_lps = lps_affine(mr_image), lps_affine(pt_image)
        same_frame = (first_dataset(mr_series).get("FrameOfReferenceUID")
                      == first_dataset(pt_series).get("FrameOfReferenceUID"))
        mr_from_pt, registration = np.eye(4), {"performed": False}
        if not same_frame:
            start = time.perf_counter()
            logger.info("MR and PT have different Frames of Reference: registering the PET to the MR (rigid, MI)")
            mr_from_pt, registration = register_pet_to_mr(mr_dhw, mr_lps, pet_dhw, pet_lps)
            registration.update(performed=True, seconds=round(time.perf_counter() - start, 2))
        fov, head = head_overlap(pet_dhw, mr_from_pt @ pet_lps, mr_dhw, mr_lps)
        registration.update(pet_signal_in_mr_field_of_view=round(fov, 4), pet_signal_on_mr_head=round(head, 4))
        logger.info("alignment: %s", registration)
        where = f"PT series {pt_series.SeriesInstanceUID} and MR series {mr_series.SeriesInstanceUID}"
        if fov < MIN_FIELD_OF_VIEW_OVERLAP:
            raise FusionInputError(f"{where} do not overlap: only {100 * fov:.0f} % of the PET's brain signal "
                                   "lies inside the MR's field of view")
        if registration["performed"]:
            failed = []
            if not registration["metric_after"] < registration["metric_before"]:
                failed.append("mutual information did not improve")
            if registration["rotation_deg"] > MAX_ROTATION_DEG:
                failed.append(f"rotation of {registration['rotation_deg']:.0f} degrees")
            if head < MIN_HEAD_OVERLAP_AFTER_REGISTRATION:
                failed.append(f"only {100 * head:.0f} % of the PET's brain signal on the MR's head")
            if failed:
                raise FusionInputError(f"registration of {where} failed ({'; '.join(failed)}): refusing to fuse "
                                       "misaligned images")
        units = pet_units([inst.get_native_sop_instance() for inst in pt_series.get_sop_instances()])
        logger.info("PET values: %s", units.note)
        return AlignedPair(mri=to_metatensor(mr_dhw, mr_lps, "MR series"),
                           pet=to_metatensor(pet_dhw, mr_from_pt @ pet_lps, "PT series"),
                           mr_series=mr_series, pt_series=pt_series, mr_from_pt_world=mr_from_pt,
                           registration=registration, pet_units=units)
