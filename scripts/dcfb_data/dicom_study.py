"""Export a simulated subject as a DICOM study: an MR series and a PT series of one patient.

The MR and PET Image Storage classes are written with pydicom: highdicom builds derived objects
(segmentations, secondary captures, parametric maps, SR) but has no constructor for the classic
single-frame acquisition IODs that scanners emit, which is what this exporter imitates.

Geometry: NIfTI affines are RAS; DICOM patient coordinates are LPS. A volume is first reoriented
(nibabel.orientations) so that its voxel axes are (column, row, slice) of the wanted plane, then each
slice is written with ImagePositionPatient / ImageOrientationPatient taken from that affine.
"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from nibabel import orientations as nio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Voxel axes (column, row, slice) for each plane, as nibabel axis codes (direction of increase).
PLANE_AXCODES = {"axial": ("L", "P", "S"), "sagittal": ("P", "I", "L"), "coronal": ("L", "I", "P")}
F18_HALF_LIFE_S = 6586.2
INT16_MAX = 32767


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def reorient(volume: np.ndarray, affine_ras: np.ndarray, plane: str) -> tuple[np.ndarray, np.ndarray]:
    """Flip / permute ``volume`` (X, Y, Z) so that its axes are (column, row, slice) of ``plane``;
    returns the reoriented array and its RAS affine."""
    if plane not in PLANE_AXCODES:
        raise ValueError(f"plane must be one of {sorted(PLANE_AXCODES)}, got {plane!r}")
    current = nio.io_orientation(affine_ras)
    transform = nio.ornt_transform(current, nio.axcodes2ornt(PLANE_AXCODES[plane]))
    data = nio.apply_orientation(volume, transform)
    affine = affine_ras @ nio.inv_ornt_aff(transform, volume.shape)
    return np.ascontiguousarray(data), affine


def rigid_matrix(rotation_deg, translation_mm) -> np.ndarray:
    """4x4 rigid transform: rotations about x, y, z (degrees, applied x then y then z), then a shift."""
    rx, ry, rz = np.deg2rad(np.asarray(rotation_deg, dtype=float))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
         @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, np.asarray(translation_mm, dtype=float)
    return m


def resample_onto(volume: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape) -> np.ndarray:
    """Resample ``volume`` (world geometry ``src_affine``) onto the grid ``dst_affine`` / ``dst_shape``."""
    src = MetaTensor(torch.from_numpy(np.asarray(volume, dtype=np.float32))[None], affine=torch.as_tensor(src_affine))
    out = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=np.float32)(
        src, dst_affine=torch.as_tensor(dst_affine), spatial_size=tuple(int(s) for s in dst_shape))
    return np.asarray(out)[0]


def oblique_grid(shape, affine_ras: np.ndarray, tilt_deg: float) -> np.ndarray:
    """The grid ``affine_ras`` tilted by ``tilt_deg`` about the left-right axis through its centre."""
    centre = affine_ras[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + affine_ras[:3, 3]
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    return back @ rigid_matrix((tilt_deg, 0.0, 0.0), (0.0, 0.0, 0.0)) @ to_centre @ affine_ras


class StudyContext:
    """What the series of one study share: patient, study, dates, and the UIDs handed out."""

    def __init__(self, patient_name: str, patient_id: str, study_uid: str | None = None,
                 study_datetime: dt.datetime | None = None, accession: str = "DCFB0001",
                 birth_date: str = "19500101", sex: str = "O"):
        self.patient_name, self.patient_id = patient_name, patient_id
        self.birth_date, self.sex, self.accession = birth_date, sex, accession
        self.study_uid = study_uid or generate_uid()
        self.when = study_datetime or dt.datetime(2024, 3, 14, 9, 30, 0)

    def base_dataset(self, sop_class_uid: str, modality: str, series_uid: str, series_number: int,
                     series_description: str, frame_of_reference_uid: str) -> Dataset:
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class_uid
        date, time = self.when.strftime("%Y%m%d"), self.when.strftime("%H%M%S")
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
        ds.AccessionNumber = self.accession
        ds.Modality = modality
        ds.Manufacturer = "DCFB Fusion simulator"
        ds.ManufacturerModelName = "MNI152 2009 cohort generator"
        ds.InstitutionName = "Simulated"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Brain MRI and FDG-PET (simulated)"
        ds.SeriesDescription = series_description
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = self.birth_date
        ds.PatientSex = self.sex
        ds.BodyPartExamined = "BRAIN"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        return ds


def _slice_geometry(ds: Dataset, affine_lps: np.ndarray, k: int, spacing: np.ndarray) -> None:
    col_dir = affine_lps[:3, 0] / spacing[0]
    row_dir = affine_lps[:3, 1] / spacing[1]
    position = affine_lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine_lps[:3, 3]
    normal = np.cross(col_dir, row_dir)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([col_dir, row_dir])]
    ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing, then column spacing
    ds.SliceThickness = f"{spacing[2]:.6f}"
    ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
    ds.SliceLocation = f"{float(np.dot(normal, position)):.6f}"


def _write_series(volume: np.ndarray, affine_ras: np.ndarray, plane: str, folder: str, prefix: str,
                  make_slice_dataset, per_slice_scaling: bool) -> list[str]:
    """Shared slice loop: reorient, scale to int16, one file per slice."""
    data, affine = reorient(np.asarray(volume, dtype=np.float32), affine_ras, plane)
    affine_lps = LPS_FROM_RAS @ affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    os.makedirs(folder, exist_ok=True)
    series_max = float(np.abs(data).max()) or 1.0
    paths = []
    for k in range(data.shape[2]):
        plane_k = data[:, :, k].T  # rows follow voxel axis 1, columns voxel axis 0
        peak = (float(np.abs(plane_k).max()) if per_slice_scaling else series_max) or 1.0
        slope = peak / INT16_MAX
        pixels = np.clip(np.round(plane_k / slope), -INT16_MAX, INT16_MAX).astype(np.int16)
        ds = make_slice_dataset(k, data.shape[2])
        ds.Rows, ds.Columns = pixels.shape
        _slice_geometry(ds, affine_lps, k, spacing)
        ds.RescaleIntercept, ds.RescaleSlope = "0", f"{slope:.10g}"
        ds.SmallestImagePixelValue, ds.LargestImagePixelValue = int(pixels.min()), int(pixels.max())
        ds["SmallestImagePixelValue"].VR = ds["LargestImagePixelValue"].VR = "SS"
        ds.PixelData = pixels.tobytes()
        path = os.path.join(folder, f"{prefix}{k + 1:04d}.dcm")
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_mr_series(volume, affine_ras, folder: str, study: StudyContext, frame_of_reference_uid: str,
                    plane: str = "axial", series_number: int = 2) -> list[str]:
    """Write a T1 MR volume (X, Y, Z float, RAS affine) as MR Image Storage, one file per slice."""
    series_uid = generate_uid()
    description = f"T1 MPRAGE 3D {plane}"

    def make(k: int, n: int) -> Dataset:
        ds = study.base_dataset(MRImageStorage, "MR", series_uid, series_number, description, frame_of_reference_uid)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = ["GR", "IR"]
        ds.SequenceVariant = ["SP", "MP"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.SequenceName = "tfl3d1"
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime = "2300", "2.98", "900"
        ds.EchoTrainLength = 1
        ds.FlipAngle = "9"
        ds.MagneticFieldStrength = "3"
        ds.ImagedNucleus = "1H"
        ds.ImagesInAcquisition = n
        return ds

    return _write_series(volume, affine_ras, plane, folder, "MR", make, per_slice_scaling=False)


def write_pet_series(volume, affine_ras, folder: str, study: StudyContext, frame_of_reference_uid: str,
                     series_number: int = 3, injected_dose_bq: float = 185e6, uptake_s: float = 2700.0,
                     frame_duration_s: float = 600.0, patient_weight_kg: float = 70.0) -> list[str]:
    """Write an FDG-PET volume in Bq/ml (X, Y, Z float, RAS affine) as PET Image Storage, axial,
    decay-corrected to the series start (DecayCorrection START), one file per slice, per-slice slope."""
    series_uid = generate_uid()
    injection = study.when - dt.timedelta(seconds=uptake_s)
    decay_factor = 2.0 ** (uptake_s / F18_HALF_LIFE_S)

    def make(k: int, n: int) -> Dataset:
        ds = study.base_dataset(PositronEmissionTomographyImageStorage, "PT", series_uid, series_number,
                                "PET Brain FDG AC", frame_of_reference_uid)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageIndex = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Units = "BQML"
        ds.PatientWeight = f"{patient_weight_kg:g}"  # with the dose and times: SUVbw (QIBA)
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.NumberOfSlices = n
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
        ds.DecayCorrection = "START"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "CT-based (simulated)"
        ds.ReconstructionMethod = "OSEM 3i21s"
        ds.CollimatorType = "NONE"
        del ds.PatientPosition  # the NM/PET Patient Orientation codes carry it for PET
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = int(frame_duration_s * 1000)
        ds.DecayFactor = f"{decay_factor:.6f}"
        ds.PatientOrientationCodeSequence = Sequence([_code("102538003", "SCT", "recumbent")])
        ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = Sequence(
            [_code("40199007", "SCT", "supine")])
        ds.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])
        info = Dataset()
        info.Radiopharmaceutical = "Fluorodeoxyglucose"
        info.RadiopharmaceuticalStartTime = injection.strftime("%H%M%S")
        info.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S")
        info.RadionuclideTotalDose = f"{injected_dose_bq:.1f}"
        info.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
        info.RadionuclidePositronFraction = "0.9686"
        info.RadionuclideCodeSequence = Sequence([_code("77004003", "SCT", "^18^Fluorine")])
        info.RadiopharmaceuticalCodeSequence = Sequence([_code("35321007", "SCT", "Fluorodeoxyglucose F^18^")])
        ds.RadiopharmaceuticalInformationSequence = Sequence([info])
        return ds

    return _write_series(volume, affine_ras, "axial", folder, "PT", make, per_slice_scaling=True)


def export_study(mri: np.ndarray, mri_affine: np.ndarray, pet: np.ndarray, pet_affine: np.ndarray,
                 output_dir: str, patient_name: str, patient_id: str, mr_plane: str = "axial",
                 mr_tilt_deg: float = 0.0, separate_frames: bool = False,
                 pet_rotation_deg=(3.0, -2.0, 4.0), pet_translation_mm=(8.0, -12.0, 5.0)) -> dict:
    """Write one study (``output_dir/MR``, ``output_dir/PT``) and return what was written.

    Args:
        mri, mri_affine / pet, pet_affine: volumes (X, Y, Z) with RAS affines, registered in world space.
        mr_plane: ``axial``, ``sagittal`` or ``coronal`` slices for the MR.
        mr_tilt_deg: resample the MR onto a grid tilted about the left-right axis (an oblique series).
        separate_frames: the PET gets its own Frame of Reference, as from another session: its patient
            coordinates are the MR's moved by the rigid transform (``pet_rotation_deg``,
            ``pet_translation_mm``), and its pixels are resampled so that its slices stay axial.

    Returns a dict with the series folders, the written RAS affines and, under
    ``pet_world_from_mr_world``, the 4x4 (RAS) that maps MR patient coordinates to the PET's.
    """
    study = StudyContext(patient_name, patient_id)
    mr_for = generate_uid()
    if mr_tilt_deg:
        tilted = oblique_grid(mri.shape, mri_affine, mr_tilt_deg)
        mri, mri_affine = resample_onto(mri, mri_affine, tilted, mri.shape), tilted
    pet_world_from_mr_world = np.eye(4)
    pet_for = mr_for
    if separate_frames:
        pet_for = generate_uid()
        pet_world_from_mr_world = LPS_FROM_RAS @ rigid_matrix(pet_rotation_deg, pet_translation_mm) @ LPS_FROM_RAS
        # The PET content seen from the other session's coordinates, on an axial grid there.
        pet = resample_onto(pet, pet_world_from_mr_world @ pet_affine, pet_affine, pet.shape)
    mr_files = write_mr_series(mri, mri_affine, os.path.join(output_dir, "MR"), study, mr_for, plane=mr_plane)
    pt_files = write_pet_series(pet, pet_affine, os.path.join(output_dir, "PT"), study, pet_for)
    return {
        "study_instance_uid": study.study_uid,
        "mr": {"folder": "MR", "files": len(mr_files), "plane": mr_plane, "tilt_deg": mr_tilt_deg,
               "frame_of_reference_uid": mr_for, "affine_ras": np.asarray(mri_affine).tolist()},
        "pt": {"folder": "PT", "files": len(pt_files), "frame_of_reference_uid": pet_for,
               "affine_ras": np.asarray(pet_affine).tolist()},
        "separate_frames": bool(separate_frames),
        "pet_world_from_mr_world": pet_world_from_mr_world.tolist(),
    }
