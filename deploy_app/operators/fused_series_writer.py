"""Write the fusion as DICOM in the MR's study: a derived grayscale series on the MR's slices, an RGB
Secondary Capture series with the PET in colour over it (and a colour bar in the PET's unit), after a
registration the PET on the MR's grid and a Spatial Registration object, and on request NIfTI and a PNG
preview. Everything is written to a hidden folder inside OUT and moved into place only once complete."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from monai.deploy.core import Operator, OperatorSpec
from monai.transforms import ScaleIntensityRangePercentiles

from ..errors import FusionInputError
from ..forked_parts import available_processes, run_in_forked_parts
from ..fusion_inputs import FusionResult
from ..pet_registration_dicom import registered_pet_slice, spatial_registration
from ..pet_units import PetUnits
from ..pictures import PetWindow, colour_bar_strip, pet_overlay_rgb, ras_preview, with_colour_bar, write_preview_png
from ..source_header import (
    ACQUISITION_EQUIPMENT,
    APP_NAME,
    IMAGE_PLANE,
    APP_VERSION,
    MR_ACQUISITION,
    PATIENT_STUDY,
    carried_attributes,
    file_meta_for,
    source_image_reference,
    valid_value,
)

logger = logging.getLogger(__name__)

OUTPUT_NAMES = {"fused": "fused_dicom", "color": "fusion_color_dicom", "registered_pet": "registered_pet_dicom",
                "registration": "registration_dicom", "nifti": "fused.nii.gz", "preview": "preview.png",
                "summary": "fusion_summary.json"}
STORED_BITS = 12
STORED_MAX = 2**STORED_BITS - 1
# Rescale slope as written to the DS element (at most 16 characters), so that readers and we agree exactly.
RESCALE_SLOPE = f"{1.0 / STORED_MAX:.10g}"


def prepare_output_folder(output_folder: Path) -> Path:
    """Make ``output_folder`` if needed and prove it writable, before any work is done."""
    output_folder = Path(output_folder)
    try:
        output_folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_folder, prefix=".dcfb-write-test-"):
            pass
    except OSError as err:
        raise FusionInputError(f"output folder {output_folder} cannot be written ({err.strerror or err})") from err
    taken = [name for name in OUTPUT_NAMES.values() if (output_folder / name).exists()]
    if taken:
        raise FusionInputError(f"output folder {output_folder} already holds {', '.join(taken)} from an earlier run: "
                               "give an empty folder (nothing is overwritten)")
    return output_folder


def plane_corners_lps(ds: Dataset) -> np.ndarray:
    """The 4 corner pixel centres of one image, in its patient coordinates (LPS mm)."""
    origin = np.asarray(ds.ImagePositionPatient, dtype=float)
    row_cos, col_cos = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    across, down = row_cos * col_spacing * (int(ds.Columns) - 1), col_cos * row_spacing * (int(ds.Rows) - 1)
    return np.stack([origin, origin + across, origin + down, origin + across + down])


def pet_sources_per_mr_slice(mr_datasets, pt_datasets, mr_from_pt_world) -> list[list[Dataset]]:
    """For each MR slice, the PT images whose slab (± half a PET slice) meets the MR slice's plane."""
    corners = np.stack([plane_corners_lps(ds) for ds in pt_datasets])  # [n_pt, 4, 3] in PET coordinates
    corners = corners @ mr_from_pt_world[:3, :3].T + mr_from_pt_world[:3, 3]
    pt_positions = corners[:, 0]
    half_slab = 0.5 * float(np.median(np.linalg.norm(np.diff(pt_positions, axis=0), axis=1))) if len(pt_datasets) > 1 \
        else 0.5 * float(pt_datasets[0].get("SliceThickness", 2.0))
    result = []
    for ds in mr_datasets:
        normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float))
        distance = (corners - np.asarray(ds.ImagePositionPatient, float)) @ normal  # [n_pt, 4]
        meets = (distance.min(axis=1) <= half_slab) & (distance.max(axis=1) >= -half_slab)
        result.append([pt_datasets[i] for i in np.flatnonzero(meets)])
    return result


def derived_mr_slice(source: Dataset, pixels: np.ndarray, series_uid: str, series_number: int, instance: int,
                     description: str, sources: list[Dataset], now: dt.datetime) -> Dataset:
    """One fused slice as an MR image derived from the MR slice ``source``: same patient, study, Frame of
    Reference and geometry; new UIDs, DERIVED image type, 12-bit pixels rescaled to [0, 1].

    Built from what the MR Image IOD requires, not copied from the source: only valid source values are carried
    (``source_header.carried_attributes``), so the source's header errors do not reach the fused series."""
    ds = carried_attributes(source, PATIENT_STUDY + MR_ACQUISITION + IMAGE_PLANE)
    if "InversionTime" in ds and "IR" not in list(ds.get("ScanningSequence", [])):
        del ds.InversionTime  # Type 2C: present only for inversion recovery
    if "BodyPartExamined" not in ds:
        ds.Laterality = None  # Type 2C for paired body parts: with the body part unknown, present and empty
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, series_number, instance
    ds.SeriesDescription = "DCFB fusion of MR and FDG-PET (research use only)"
    image_type = list(source.get("ImageType", []))[2:3]
    ds.ImageType = ["DERIVED", "SECONDARY"] + [v for v in image_type if valid_value("ImageType", v)]
    ds.DerivationDescription = description[:1024]
    ds.SourceImageSequence = Sequence([source_image_reference(s) for s in [source, *sources]])
    ds.ContentDate = ds.InstanceCreationDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "DCFB Fusion", APP_NAME, APP_VERSION
    ds.Rows, ds.Columns = int(source.Rows), int(source.Columns)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, STORED_BITS, STORED_BITS - 1, 0
    ds.RescaleIntercept, ds.RescaleSlope = "0", RESCALE_SLOPE
    ds.WindowCenter, ds.WindowWidth = "0.5", "1"
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = np.rint(np.clip(pixels, 0, 1) * STORED_MAX).astype(np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = file_meta_for(ds, ExplicitVRLittleEndian)
    return ds


def colour_slice(source: Dataset, rgb: np.ndarray, series_uid: str, series_number: int, instance: int,
                 description: str, source_items: Sequence) -> hd.sc.SCImage:
    """One RGB Secondary Capture image of the PET in colour over the fused slice, with the MR slice's patient,
    study and equipment attributes (valid values only, as for the fused series)."""
    reference = carried_attributes(source, PATIENT_STUDY + ACQUISITION_EQUIPMENT)
    color = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=instance, manufacturer="DCFB Fusion",
        patient_orientation=patient_orientation(source), pixel_spacing=tuple(float(v) for v in source.PixelSpacing),
        transfer_syntax_uid=ExplicitVRLittleEndian)
    color.SeriesDescription = "DCFB fusion, PET colour over fused (research use only)"
    # Type 2C in General Series; a viewer-facing SC of an unpaired organ still gets it, empty, because
    # validators cannot tell that the brain is unpaired.
    color.Laterality = None
    color.DerivationDescription = description[:1024]
    color.SourceImageSequence = copy.deepcopy(source_items)
    color.file_meta = file_meta_for(color, ExplicitVRLittleEndian)
    return color


def check_source_headers(mr_datasets: list[Dataset], pt_datasets: list[Dataset]) -> None:
    """Build the first image of each output series with blank pixels: a header the writer cannot turn into valid
    objects refuses the study here, before the inference, naming the attribute."""
    first = mr_datasets[0]
    blank = np.zeros((int(first.Rows), int(first.Columns)), dtype=np.float32)
    try:
        fused = derived_mr_slice(first, blank, generate_uid(), 1, 1, "header check", [], dt.datetime.now())
        colour_slice(first, np.zeros((*blank.shape, 3), np.uint8), generate_uid(), 2, 1, "header check",
                     fused.SourceImageSequence)
        registered_pet_slice(first, pt_datasets[0], blank, PetUnits("BQML", None, ""), generate_uid(), 3, 1, 1, [],
                             "header check", dt.datetime.now())
        spatial_registration([first], pt_datasets[:1], np.eye(4), generate_uid(), 4, "header check", dt.datetime.now())
    except FusionInputError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise FusionInputError(f"MR series {first.get('SeriesInstanceUID', '?')}: its header cannot be carried "
                               f"into the fused series ({type(err).__name__}: {err})") from err


def patient_orientation(ds: Dataset) -> tuple[str, str]:
    """DICOM Patient Orientation (row, column directions) from Image Orientation (Patient): dominant axis."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))  # negative, positive direction of x, y, z in LPS

    def letter(vector) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][int(vector[axis] > 0)]

    cosines = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return letter(cosines[:3]), letter(cosines[3:])


@dataclass(frozen=True)
class SlicePlan:
    """Everything the per-slice writing needs, decided once for the whole series (``_write_all``)."""

    result: FusionResult
    stage: Path
    mr_datasets: list
    pt_datasets: list
    pet: np.ndarray
    window: PetWindow
    bar: np.ndarray
    pet_sources: list
    units: PetUnits
    description: str
    now: dt.datetime
    uids: dict
    numbers: dict
    registered: bool


def write_slices(plan: SlicePlan, indices) -> None:
    """The images of MR slices ``indices`` (0-based) of every per-slice series, into ``plan.stage``."""
    for k in indices:
        source = plan.mr_datasets[k]
        derived = derived_mr_slice(source, plan.result.fused[k], plan.uids["fused"], plan.numbers["fused"], k + 1,
                                   plan.description, plan.pet_sources[k], plan.now)
        derived.save_as(plan.stage / OUTPUT_NAMES["fused"] / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
        rgb = with_colour_bar(pet_overlay_rgb(plan.result.fused[k], plan.pet[k], plan.window), plan.bar)
        color = colour_slice(source, rgb, plan.uids["color"], plan.numbers["color"], k + 1, plan.description,
                             derived.SourceImageSequence)
        color.save_as(plan.stage / OUTPUT_NAMES["color"] / f"SC{k + 1:05d}.dcm", enforce_file_format=True)
        if plan.registered:
            pet_slice = registered_pet_slice(source, plan.pt_datasets[0], plan.pet[k], plan.units,
                                             plan.uids["registered_pet"], plan.numbers["registered_pet"], k + 1,
                                             len(plan.mr_datasets), plan.pet_sources[k], plan.description, plan.now)
            pet_slice.save_as(plan.stage / OUTPUT_NAMES["registered_pet"] / f"PT{k + 1:05d}.dcm",
                              enforce_file_format=True)


# Each slice's objects (headers built and checked, the colour overlay, pydicom's encoding) are pure Python: 3.0-4.4 s
# of a 15-18 s app run on the sample study on the 2-core development machine, the largest stage after the network.
# So the slices are written in several processes (``forked_parts``), each taking a dozen or more.
MIN_SLICES_PER_PROCESS = 16
# a process still writing after this long per slice (measured: about 0.02 s) is stuck, not slow
SECONDS_PER_SLICE = 1.0


def write_processes(n_slices: int) -> int:
    """How many processes write a series of ``n_slices`` images by default (``forked_parts.available_processes``)."""
    return available_processes(n_slices, MIN_SLICES_PER_PROCESS)


def write_slices_in_processes(plan: SlicePlan, processes: int) -> int:
    """All slices of ``plan``, in up to ``processes`` processes (``forked_parts.run_in_forked_parts``); returns how
    many parts they were written in."""
    return len(run_in_forked_parts(lambda part: write_slices(plan, part), len(plan.mr_datasets), processes,
                                   "writing slices", SECONDS_PER_SLICE))


class FusedSeriesWriterOperator(Operator):
    """Writes a ``FusionResult`` into ``output_folder``.

    Named input: ``result`` (``FusionResult``). Writes:
        ``fused_dicom/``: MR Image Storage, one DERIVED image per MR slice with the MR's geometry, study and
            Frame of Reference; SourceImageSequence names the MR slice and the PT images that meet it.
        ``fusion_color_dicom/``: RGB Secondary Capture (highdicom), the PET in colour over the fused image, with a
            colour bar in the PET's unit (SUVbw when the header allows, ``pet_units.py``) to its right.
        ``registered_pet_dicom/`` and ``registration_dicom/``, when the PET was registered to the MR: the PET on
            the MR's slices as a derived PT series in the MR's Frame of Reference (Bq/ml or SUVbw), and a Spatial
            Registration object with the rigid transform (``pet_registration_dicom.py``).
        ``fused.nii.gz`` and ``preview.png`` when ``write_nifti`` / ``write_preview`` are set.
        ``fusion_summary.json``: the series written, the sources, the PET's unit, the alignment and timings (no
            patient data).

    The per-slice images are written by ``processes`` processes: None, as many as ``write_processes`` finds useful
    (one per CPU, at most 4); 1, this one alone (``forked_parts``).
    """

    def __init__(self, fragment, *args, output_folder: Path, write_nifti: bool = False, write_preview: bool = False,
                 model_description: str = "", pet_emphasis: float | None = None, processes: int | None = None,
                 **kwargs):
        self.output_folder = prepare_output_folder(output_folder)
        self.processes = processes
        self.write_nifti, self.write_preview = write_nifti, write_preview
        self.model_description = model_description
        self.pet_emphasis = pet_emphasis
        self.runtime: dict = {}
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("result")

    def compute(self, op_input, op_output, context):
        self.write(op_input.receive("result"))

    def write(self, result: FusionResult) -> dict:
        start = time.perf_counter()
        stage = Path(tempfile.mkdtemp(dir=self.output_folder, prefix=".dcfb-partial-"))
        try:
            summary = self._write_all(result, stage)
            summary["timings_s"] = {**{k: round(v, 3) for k, v in result.timings_s.items()},
                                    "write_s": round(time.perf_counter() - start, 3)}
            (stage / OUTPUT_NAMES["summary"]).write_text(json.dumps(summary, indent=2))
            for name in sorted(os.listdir(stage)):
                os.replace(stage / name, self.output_folder / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        logger.info("wrote %s into %s", ", ".join(summary["written"]), self.output_folder)
        return summary

    def _write_all(self, result: FusionResult, stage: Path) -> dict:
        pair = result.pair
        mr_datasets = [s.get_native_sop_instance() for s in pair.mr_series.get_sop_instances()]
        pt_datasets = [s.get_native_sop_instance() for s in pair.pt_series.get_sop_instances()]
        if len(mr_datasets) != result.fused.shape[0]:
            raise RuntimeError(f"{result.fused.shape[0]} fused slices for {len(mr_datasets)} MR images")
        units: PetUnits = pair.pet_units
        pet = result.pet_on_mr * units.display_factor  # [D, H, W] in Bq/ml, SUVbw, or the PET's own unit
        window = PetWindow.of(pet, units.display_unit)
        bar = colour_bar_strip(int(mr_datasets[0].Rows), window)
        pet_sources = pet_sources_per_mr_slice(mr_datasets, pt_datasets, pair.mr_from_pt_world)
        registered = pair.registration.get("performed", False)
        description = (f"Fusion of MR series {pair.mr_series.SeriesInstanceUID} and PT series "
                       f"{pair.pt_series.SeriesInstanceUID}{' after rigid mutual-information registration' if registered else ''}"
                       f", PT resampled onto the MR grid; {self.model_description}; PET in {units.display_unit}. "
                       "Research use only.")
        now = dt.datetime.now()
        mr_series_number = int(mr_datasets[0].get("SeriesNumber", 0) or 0)
        uids = {key: generate_uid() for key in ("fused", "color", "registered_pet", "registration")}
        numbers = {"fused": mr_series_number + 1000, "color": mr_series_number + 1001,
                   "registered_pet": mr_series_number + 1002, "registration": mr_series_number + 1003}
        kinds = ["fused", "color"] + (["registered_pet", "registration"] if registered else [])
        for kind in kinds:
            (stage / OUTPUT_NAMES[kind]).mkdir()
        plan = SlicePlan(result=result, stage=stage, mr_datasets=mr_datasets, pt_datasets=pt_datasets, pet=pet,
                         window=window, bar=bar, pet_sources=pet_sources, units=units, description=description, now=now,
                         uids=uids, numbers=numbers, registered=registered)
        processes = self.processes if self.processes is not None else write_processes(len(mr_datasets))
        runtime = {**self.runtime, "write_processes": write_slices_in_processes(plan, processes)}
        if registered:
            registration = spatial_registration(mr_datasets, pt_datasets, pair.mr_from_pt_world, uids["registration"],
                                                numbers["registration"], "Rigid mutual-information registration "
                                                "of the PET to the MR", now)
            registration.save_as(stage / OUTPUT_NAMES["registration"] / "REG00001.dcm", enforce_file_format=True)
        written = [OUTPUT_NAMES[kind] for kind in kinds]
        if self.write_nifti:
            import nibabel as nib

            nib.save(nib.Nifti1Image(result.fused.transpose(2, 1, 0), result.mr_affine_ras),
                     stage / OUTPUT_NAMES["nifti"])
            written.append(OUTPUT_NAMES["nifti"])
        if self.write_preview:
            mri = np.asarray(ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True)(
                np.asarray(pair.mri, dtype=np.float32))).transpose(2, 1, 0)
            preview = ras_preview({"mri": mri, "pet": pet, "fused": result.fused}, result.mr_affine_ras)
            write_preview_png(preview, window, stage / OUTPUT_NAMES["preview"])
            written.append(OUTPUT_NAMES["preview"])
        return {"app": APP_NAME, "version": APP_VERSION, "model": self.model_description,
                "pet_emphasis": self.pet_emphasis, "runtime": runtime,
                "written": written + [OUTPUT_NAMES["summary"]],
                "series_instance_uids": {kind: uids[kind] for kind in kinds},
                "fused_series_instance_uid": uids["fused"], "color_series_instance_uid": uids["color"],
                "study_instance_uid": str(mr_datasets[0].StudyInstanceUID),
                "source_mr_series_instance_uid": str(pair.mr_series.SeriesInstanceUID),
                "source_pt_series_instance_uid": str(pair.pt_series.SeriesInstanceUID),
                "images_per_series": len(mr_datasets), "rescale_slope": float(RESCALE_SLOPE),
                "pet_units": units.as_dict(),
                "pet_display_window": {"lower": 0.0, "upper": round(window.upper, 6), "unit": window.unit},
                "alignment": pair.registration,
                "mr_from_pt_world_lps": np.asarray(pair.mr_from_pt_world).round(6).tolist()}
