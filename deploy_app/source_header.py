"""What the app's DICOM objects carry over from the source MR, and only what is valid.

Real headers hold values that break the standard (PatientSex ``0000``, a date ``1``, a code string in lower
case). A derived object copies no value it has not checked: each is validated against its VR with pydicom's own
validators, dates against the calendar, and enumerated attributes against the values DICOM allows. A Type 2
attribute whose value fails is written empty, a Type 3 one left out, and a Type 1 one (a UID the objects must
share with the study) refuses the study, before any work is done. So a source's header errors do not become the
app's, and nothing in a header can stop the writer after the inference.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
import warnings

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import IS, DSfloat, validate_value

from .errors import FusionInputError
from .multiframe import frame_source

APP_NAME = "DCFB Fusion MONAI Deploy app"
APP_VERSION = "0.1.0"
# The app's own implementation identity in the file meta of everything it writes (not pydicom's, not the source's).
# A UUID-derived UID (2.25, PS3.5 B.2) from a name-based UUID: the same on every run and machine.
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_DNS, 'deploy-app.dcfb-fusion').int}"
IMPLEMENTATION_VERSION_NAME = f"DCFB_{APP_VERSION}"[:16]

# (keyword, DICOM type) of the patient, study, frame and equipment attributes the derived objects share with the MR.
PATIENT_STUDY = (("PatientName", 2), ("PatientID", 2), ("IssuerOfPatientID", 3), ("PatientBirthDate", 2),
                 ("PatientSex", 2), ("StudyInstanceUID", 1), ("StudyDate", 2), ("StudyTime", 2),
                 ("ReferringPhysicianName", 2), ("StudyID", 2), ("AccessionNumber", 2), ("StudyDescription", 3),
                 ("FrameOfReferenceUID", 1), ("PositionReferenceIndicator", 2), ("SpecificCharacterSet", 3))
# Of the MR acquisition: the MR Image module's Type 1 and 2 attributes and a few Type 3 ones. Type 1 ones that fail
# get the values the standard keeps for what cannot be said (RM: research mode, NONE).
MR_ACQUISITION = (("ScanningSequence", 1), ("SequenceVariant", 1), ("ScanOptions", 2), ("MRAcquisitionType", 2),
                  ("RepetitionTime", 2), ("EchoTime", 2), ("EchoTrainLength", 2), ("InversionTime", 3),
                  ("SequenceName", 3), ("MagneticFieldStrength", 3), ("ImagedNucleus", 3), ("PatientPosition", 2),
                  ("BodyPartExamined", 3))
MR_TYPE1_FALLBACK = {"ScanningSequence": "RM", "SequenceVariant": "NONE"}
# Per-image geometry of a slice: the Image Plane module (Type 1, SliceThickness 2, SliceLocation 3).
IMAGE_PLANE = (("ImagePositionPatient", 1), ("ImageOrientationPatient", 1), ("PixelSpacing", 1),
               ("SliceThickness", 2), ("SliceLocation", 3))
ACQUISITION_EQUIPMENT = (("Manufacturer", 3), ("ManufacturerModelName", 3), ("DeviceSerialNumber", 3),
                         ("SoftwareVersions", 3), ("InstitutionName", 3), ("StationName", 3))
# Enumerated values (PS3.3): a value outside these is not carried.
ENUMERATED = {
    "PatientSex": {"M", "F", "O"},
    "ScanningSequence": {"SE", "IR", "GR", "EP", "RM"},
    "SequenceVariant": {"SK", "MTC", "SS", "TRSS", "SP", "MP", "OSP", "NONE"},
    "MRAcquisitionType": {"2D", "3D"},
    "PatientPosition": {"HFP", "HFS", "HFDR", "HFDL", "FFDR", "FFDL", "FFP", "FFS", "LFP", "LFS", "RFP", "RFS",
                        "AFDR", "AFDL", "PFDR", "PFDL"},
}
PN_MAX_COMPONENTS, PN_MAX_GROUPS = 5, 3
UNREADABLE = object()  # a value pydicom cannot convert from its bytes


@functools.lru_cache(maxsize=4096)
def _valid_single(keyword: str, vr: str, value: str) -> bool:
    # cached: the writer asks the same (keyword, value) of every slice of a series, hundreds of times
    text = str(value)
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError):
        return False
    if vr == "DA" and text:
        try:
            dt.datetime.strptime(text, "%Y%m%d")
        except ValueError:
            return False
    if vr == "PN" and text:
        groups = text.split("=")
        if len(groups) > PN_MAX_GROUPS or any(len(g.split("^")) > PN_MAX_COMPONENTS for g in groups):
            return False
    if keyword in ENUMERATED and text and text not in ENUMERATED[keyword]:
        return False
    return True


def valid_value(keyword: str, value) -> bool:
    """Whether ``value`` (one value or several) may be written as ``keyword`` as it is."""
    vr = dictionary_VR(keyword)
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    if vr in ("US", "SS", "FL", "FD") or vr.startswith("O"):
        return True  # binary VRs: pydicom decoded them already
    # pydicom's validators take the text as written (a DSfloat or a PersonName is checked as its string)
    return all(v is not UNREADABLE and _valid_single(keyword, vr, str(v)) for v in values)


def _as_number(vr: str, value):
    """A DS or IS value (or several) rewritten from its number, or None when it is not a finite number: scanners
    write decimal strings longer than DS allows, and the number is what matters."""
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(n) for n in numbers) or (vr == "IS" and any(n != int(n) for n in numbers)):
        return None
    out = [DSfloat(n, auto_format=True) if vr == "DS" else IS(int(n)) for n in numbers]
    return out if len(out) > 1 else out[0]


def carried_attributes(source: Dataset, attributes=PATIENT_STUDY) -> Dataset:
    """A new dataset with the ``attributes`` of ``source`` that are valid; Type 2 ones empty when not.

    Raises ``FusionInputError`` for a Type 1 attribute that is missing or invalid (the message names the keyword,
    never the value: it may identify the patient).
    """
    carried = Dataset()
    for keyword, kind in attributes:
        try:
            with warnings.catch_warnings():  # pydicom warns of each invalid value it reads: this function decides
                warnings.simplefilter("ignore")
                value = source.get(keyword)
        except (ValueError, TypeError, OverflowError):  # a value pydicom cannot even convert (DS "abc")
            value = UNREADABLE
        if dictionary_VR(keyword) in ("DS", "IS") and value not in (None, ""):
            value = _as_number(dictionary_VR(keyword), value)
        ok = value is not None and value != "" and valid_value(keyword, value)
        if ok:
            setattr(carried, keyword, value)
        elif kind == 1 and keyword in MR_TYPE1_FALLBACK:
            setattr(carried, keyword, MR_TYPE1_FALLBACK[keyword])
        elif kind == 1:
            state = "missing" if value in (None, "") else "not a valid value"
            raise FusionInputError(f"MR image {source.get('SOPInstanceUID', '?')}: {keyword} is {state}")
        elif kind == 2:
            setattr(carried, keyword, None)
    return carried


def file_meta_for(ds: Dataset, transfer_syntax_uid: str) -> FileMetaDataset:
    """File meta information naming this app as the implementation that wrote ``ds``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def source_image_reference(ds: Dataset, purpose: bool = True) -> Dataset:
    """A reference to the source image ``ds`` (for a frame of a multi-frame image, multiframe.py: the multi-frame
    instance and the frame's number, which is what exists in the study); with ``purpose``, as a Source Image
    Sequence item ("source image for image processing operation")."""
    item = Dataset()
    frame = frame_source(ds.SOPInstanceUID)
    if frame is not None:
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID, item.ReferencedFrameNumber = frame
    else:
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    if purpose:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "121322", "DCM"
        code.CodeMeaning = "Source image for image processing operation"
        item.PurposeOfReferenceCodeSequence = Sequence([code])
    return item
