"""What a registration of the PET to the MR leaves for viewers and audits: a Spatial Registration object (REG) with
the rigid transform between the two Frames of Reference, and the PET resampled onto the MR's grid as a derived PT
series in the MR's Frame of Reference, in Bq/ml or SUVbw, which any viewer with PET/MR fusion overlays natively.

Built from what the Spatial Registration and PET Image IODs require (PS3.3 A.39, A.21) with pydicom: highdicom,
which writes the app's other objects, has no constructor for either. Source values are carried only when valid
(``source_header.carried_attributes``), as for the fused series.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, SpatialRegistrationStorage, \
    generate_uid
from pydicom.valuerep import DSfloat

from .pet_units import PetUnits
from .source_header import (
    APP_NAME,
    APP_VERSION,
    IMAGE_PLANE,
    PATIENT_STUDY,
    carried_attributes,
    file_meta_for,
    source_image_reference,
    valid_value,
)

# Of the source PT: PET Series and PET Image attributes that stay true of its values after resampling.
PET_SERIES = (("SeriesDate", 3), ("SeriesTime", 3), ("CountsSource", 3), ("SeriesType", 3), ("CorrectedImage", 2),
              ("DecayCorrection", 3), ("RandomsCorrectionMethod", 3), ("AttenuationCorrectionMethod", 3),
              ("ScatterCorrectionMethod", 3), ("ReconstructionMethod", 3), ("FrameReferenceTime", 3),
              ("AcquisitionDate", 2), ("AcquisitionTime", 2), ("ActualFrameDuration", 2), ("DecayFactor", 3),
              ("CollimatorType", 2))
# What a PET Image needs and the source may lack (Type 1): the values for what cannot be said otherwise.
PET_TYPE1_DEFAULTS = {"CountsSource": "EMISSION", "SeriesType": ["STATIC", "IMAGE"], "DecayCorrection": "NONE",
                      "FrameReferenceTime": "0"}
RADIOPHARMACEUTICAL = (("Radiopharmaceutical", 3), ("RadiopharmaceuticalRoute", 3),
                       ("RadiopharmaceuticalStartTime", 3), ("RadiopharmaceuticalStartDateTime", 3),
                       ("RadionuclideTotalDose", 3), ("RadionuclideHalfLife", 3),
                       ("RadionuclidePositronFraction", 3))
CODE_SEQUENCES_IN_ISOTOPE = ("RadionuclideCodeSequence", "RadiopharmaceuticalCodeSequence")
MAX_STORED = 65535


def _codes(items) -> Sequence:
    """Code sequence items with valid CodeValue, CodingSchemeDesignator and CodeMeaning (others left out)."""
    kept = []
    for item in items or []:
        code = Dataset()
        for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
            value = item.get(keyword)
            if value in (None, "") or not valid_value(keyword, value):
                break
            setattr(code, keyword, value)
        else:
            for nested in ("PatientOrientationModifierCodeSequence",):
                if nested in item:
                    setattr(code, nested, _codes(item.get(nested)))
            kept.append(code)
    return Sequence(kept)


def _isotope(pt: Dataset) -> Sequence:
    """The PET Isotope module's Radiopharmaceutical Information Sequence, its valid content only."""
    items = []
    for source_item in pt.get("RadiopharmaceuticalInformationSequence", []) or []:
        item = carried_attributes(source_item, RADIOPHARMACEUTICAL)
        for keyword in CODE_SEQUENCES_IN_ISOTOPE:
            setattr(item, keyword, _codes(source_item.get(keyword)))
        items.append(item)
    return Sequence(items)


def registered_pet_slice(mr_slice: Dataset, pt_first: Dataset, values: np.ndarray, units: PetUnits, series_uid: str,
                         series_number: int, instance: int, n_slices: int, sources: list[Dataset], description: str,
                         now: dt.datetime) -> Dataset:
    """One slice of the PET on the MR's grid as a PET Image: the MR slice's geometry, patient, study and Frame of
    Reference; the PET's acquisition facts; ``values`` [rows, columns] in ``units.output_units_code`` (negative
    values, which resampling does not make from a non-negative PET, are written as 0)."""
    ds = carried_attributes(mr_slice, PATIENT_STUDY + IMAGE_PLANE)
    pet = carried_attributes(pt_first, PET_SERIES)
    for element in pet:
        ds[element.tag] = element
    for keyword, default in PET_TYPE1_DEFAULTS.items():
        if ds.get(keyword) in (None, ""):
            setattr(ds, keyword, default)
    if ds.DecayCorrection != "NONE" and ds.get("DecayFactor") in (None, ""):
        ds.DecayFactor = "1"  # Type 1C; the source did not say, and the values are as the source decay-corrected them
    if ds.get("SeriesDate") in (None, "") or ds.get("SeriesTime") in (None, ""):
        ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "PT"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber, ds.ImageIndex = series_uid, series_number, instance, instance
    ds.SeriesDescription = f"PET registered to MR, {units.display_unit} (DCFB fusion, research use only)"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = f"{description} {units.note}."[:1024]
    if sources:  # a slice beyond the PET's field of view has none (and holds zeros)
        ds.SourceImageSequence = Sequence([source_image_reference(s) for s in sources])
    ds.Units = units.output_units_code
    if ds.Units == "GML":
        ds.SUVType = "BW"
    ds.NumberOfSlices = n_slices
    ds.RadiopharmaceuticalInformationSequence = _isotope(pt_first)
    ds.PatientOrientationCodeSequence = _codes(pt_first.get("PatientOrientationCodeSequence"))
    ds.PatientGantryRelationshipCodeSequence = _codes(pt_first.get("PatientGantryRelationshipCodeSequence"))
    if "BodyPartExamined" not in ds:
        ds.Laterality = None  # Type 2C in General Series; the brain is unpaired, which validators cannot know
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "DCFB Fusion", APP_NAME, APP_VERSION
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    values = np.clip(np.nan_to_num(values, nan=0.0), 0.0, None)
    top = float(values.max())
    slope = DSfloat(top / MAX_STORED if top > 0 else 1.0, auto_format=True)  # per slice, as PET scanners write
    ds.RescaleIntercept, ds.RescaleSlope = "0", slope
    ds.PixelData = np.clip(np.rint(values / float(slope)), 0, MAX_STORED).astype(np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = file_meta_for(ds, ExplicitVRLittleEndian)
    return ds


def _matrix(transform: np.ndarray) -> list:
    return [DSfloat(float(v), auto_format=True) for v in np.asarray(transform, dtype=float).reshape(16)]


def _registration_item(frame_of_reference_uid: str | None, images: list[Dataset], transform: np.ndarray,
                       method: Dataset | None) -> Dataset:
    """One Registration Sequence item; ``method``: the RCS Registration Method code (CID 7100), None for the
    object's own frame (nothing was registered there)."""
    item = Dataset()
    if frame_of_reference_uid:
        item.FrameOfReferenceUID = frame_of_reference_uid
    item.ReferencedImageSequence = Sequence(_unique_references(images))
    matrix = Dataset()
    matrix.FrameOfReferenceTransformationMatrixType = "RIGID"
    matrix.FrameOfReferenceTransformationMatrix = _matrix(transform)
    registration = Dataset()
    registration.RegistrationTypeCodeSequence = Sequence([method] if method is not None else [])
    registration.MatrixSequence = Sequence([matrix])
    item.MatrixRegistrationSequence = Sequence([registration])
    return item


def _unique_references(images: list[Dataset]) -> list[Dataset]:
    """One reference per stored instance (the frames of a multi-frame image are one instance)."""
    seen, references = set(), []
    for ds in images:
        ref = source_image_reference(ds, purpose=False)
        if ref.ReferencedSOPInstanceUID not in seen:
            seen.add(ref.ReferencedSOPInstanceUID)
            if "ReferencedFrameNumber" in ref:
                del ref.ReferencedFrameNumber  # the whole instance is registered, not a frame of it
            references.append(ref)
    return references


def spatial_registration(mr_datasets: list[Dataset], pt_datasets: list[Dataset], mr_from_pt_lps: np.ndarray,
                         series_uid: str, series_number: int, description: str, now: dt.datetime) -> Dataset:
    """The Spatial Registration object in the MR's Frame of Reference: the MR's frame with the identity, the PET's
    with ``mr_from_pt_lps`` (which maps the PET's patient coordinates, LPS mm, to the MR's: PS3.3 C.20.2.1.1's
    direction, registered frame to the object's frame), each naming its images."""
    mr, pt = mr_datasets[0], pt_datasets[0]
    ds = carried_attributes(mr, PATIENT_STUDY)
    ds.SOPClassUID = SpatialRegistrationStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "REG"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, series_number, 1
    ds.SeriesDescription = "PET to MR rigid registration (DCFB fusion, research use only)"
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ContentLabel = "PET_TO_MR"
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = None
    ds.Laterality = None  # Type 2C in General Series, as for the other series
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "DCFB Fusion", APP_NAME, APP_VERSION
    ds.DeviceSerialNumber = "0"  # Type 1 in Enhanced General Equipment; software has no serial number
    pt_frame = pt.get("FrameOfReferenceUID")
    pt_frame = str(pt_frame) if pt_frame and valid_value("FrameOfReferenceUID", pt_frame) else None
    content_based = Dataset()
    content_based.CodeValue, content_based.CodingSchemeDesignator = "125024", "DCM"
    content_based.CodeMeaning = "Image Content-based Alignment"
    ds.RegistrationSequence = Sequence([
        _registration_item(str(mr.FrameOfReferenceUID), mr_datasets, np.eye(4), None),
        _registration_item(pt_frame, pt_datasets, mr_from_pt_lps, content_based)])
    # Common Instance Reference: series of this study directly, a PET from another study under its study
    in_study, other_studies = [], []
    for images in (mr_datasets, pt_datasets):
        series = Dataset()
        series.SeriesInstanceUID = images[0].SeriesInstanceUID
        series.ReferencedInstanceSequence = Sequence(_unique_references(images))
        if str(images[0].get("StudyInstanceUID", "")) == str(mr.StudyInstanceUID):
            in_study.append(series)
        else:
            study = Dataset()
            study.StudyInstanceUID = images[0].StudyInstanceUID
            study.ReferencedSeriesSequence = Sequence([series])
            other_studies.append(study)
    ds.ReferencedSeriesSequence = Sequence(in_study)
    if other_studies:
        ds.StudiesContainingOtherReferencedInstancesSequence = Sequence(other_studies)
    ds.file_meta = file_meta_for(ds, ExplicitVRLittleEndian)
    return ds
