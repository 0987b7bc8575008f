"""Multi-frame images (Enhanced MR and PET, Legacy Converted Enhanced MR and PET) as single-frame images.

The SDK's loader and volume builder know one image per file; current scanners send one file per series (or a
few), its frames in any order, with each frame's geometry and rescale in the per-frame or shared functional
groups. Each frame becomes a classic single-frame MR or PT image carrying exactly that frame's geometry, rescale
and pixels, so that the series checks and the volume builder treat it as any other slice. Its Source Image
Sequence in the app's outputs names the multi-frame instance and the frame (``frame_source``).
"""

from __future__ import annotations

import copy
import io

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PositronEmissionTomographyImageStorage, generate_uid

from .errors import FusionInputError

SINGLE_FRAME_CLASS = {"MR": MRImageStorage, "PT": PositronEmissionTomographyImageStorage}
FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# (functional group sequence, attribute) that a single-frame image carries at its top level
FRAME_ATTRIBUTES = (("PlanePositionSequence", "ImagePositionPatient"),
                    ("PlaneOrientationSequence", "ImageOrientationPatient"),
                    ("PixelMeasuresSequence", "PixelSpacing"), ("PixelMeasuresSequence", "SliceThickness"),
                    ("PixelValueTransformationSequence", "RescaleSlope"),
                    ("PixelValueTransformationSequence", "RescaleIntercept"),
                    ("FrameVOILUTSequence", "WindowCenter"), ("FrameVOILUTSequence", "WindowWidth"))
DROPPED = {"PixelData", "NumberOfFrames", *FUNCTIONAL_GROUPS, "DimensionIndexSequence",
           "DimensionOrganizationSequence", "SourceImageSequence", "ReferencedImageSequence"}


# The single-frame images made here, by SOP Instance UID: (SOP Class UID, SOP Instance UID, frame number) of the
# multi-frame image and frame they stand for (this process only: the writer references what is in the study).
FRAME_SOURCES: dict[str, tuple[str, str, int]] = {}


def frame_source(sop_instance_uid: str) -> tuple[str, str, int] | None:
    return FRAME_SOURCES.get(str(sop_instance_uid))


def is_multiframe(ds: Dataset) -> bool:
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 and str(ds.get("Modality", "")) in SINGLE_FRAME_CLASS


def _frame_value(groups: list[Dataset], sequence: str, keyword: str):
    for group in groups:
        if sequence in group and len(group[sequence].value) and keyword in group[sequence].value[0]:
            return group[sequence].value[0][keyword].value
    return None


def single_frame_files(path: str) -> list[io.BytesIO]:
    """The frames of the multi-frame image at ``path`` as single-frame DICOM files in memory, each named
    ``<path> (frame k)`` for messages."""
    ds = dcmread(path)
    frames = int(ds.NumberOfFrames)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    shared = list(ds.get("SharedFunctionalGroupsSequence", [])[:1])
    if len(per_frame) != frames:
        raise FusionInputError(f"{path}: {frames} frames but {len(per_frame)} per-frame functional groups")
    pixels = ds.pixel_array
    header = Dataset()
    for elem in ds:
        if elem.keyword not in DROPPED and not elem.tag.is_private:
            header.add(copy.deepcopy(elem))
    source_class, source_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    files = []
    for k in range(frames):
        frame = copy.deepcopy(header)  # each frame its own elements: setting one must not change another
        groups = [per_frame[k], *shared]
        for sequence, keyword in FRAME_ATTRIBUTES:
            value = _frame_value(groups, sequence, keyword)
            if value is not None:
                setattr(frame, keyword, value)
        frame.SOPClassUID = SINGLE_FRAME_CLASS[str(ds.Modality)]
        frame.SOPInstanceUID = generate_uid(entropy_srcs=[source_uid, str(k)])
        frame.InstanceNumber = k + 1
        frame.ImageType = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY"]))[:3]
        FRAME_SOURCES[str(frame.SOPInstanceUID)] = (source_class, source_uid, k + 1)
        frame.PixelData = pixels[k].tobytes()
        frame.file_meta = FileMetaDataset()
        frame.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        frame.file_meta.MediaStorageSOPClassUID, frame.file_meta.MediaStorageSOPInstanceUID = (
            frame.SOPClassUID, frame.SOPInstanceUID)
        buffer = io.BytesIO()
        frame.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        buffer.name = f"{path} (frame {k + 1})"
        files.append(buffer)
    return files
