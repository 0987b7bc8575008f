"""The SDK's DICOM study loader, with each file checked first so that one bad file cannot stop a study."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from monai.deploy.operators import DICOMDataLoaderOperator

from ..errors import FusionInputError

logger = logging.getLogger(__name__)


def pixel_data_problem(path: str) -> tuple[str | None, str | None]:
    """(why the file at ``path`` cannot be used as an image instance or ``None`` when it can, its SOP Instance UID).

    Reads the whole file with pydicom and, for native (uncompressed) transfer syntaxes, checks that the
    pixel data holds every byte that Rows x Columns x Samples x Frames x BitsAllocated promises: a file cut
    short in transfer otherwise loads without complaint and fails, or worse, later.
    """
    try:
        ds = dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        return f"not a readable DICOM file ({type(err).__name__}: {err})", None
    if "SOPInstanceUID" not in ds:
        return "no SOP Instance UID", None
    uid = str(ds.SOPInstanceUID)
    if "PixelData" not in ds:
        return None, uid  # not an image (e.g. a report): the SDK loader sorts it out by SOP class
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if not syntax.is_transfer_syntax:
        return f"unknown transfer syntax {syntax}", uid
    if syntax.is_compressed:
        return decoding_problem(ds, syntax), uid
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError) as err:
        return f"image attributes missing or malformed ({err})", uid
    got = len(ds.PixelData)
    if got < expected:
        return f"pixel data truncated ({got} of {expected} bytes)", uid
    return None, uid


def decoding_problem(ds, syntax: UID) -> str | None:
    """Why the compressed pixel data of ``ds`` cannot be decoded, or None: tried now, so that a file no installed
    decoder can read is named here, before any volume is built, and never fails later as a traceback."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"pixel data cannot be decoded: no decoder exists for {syntax.name} ({syntax})"
    if not decoder.is_available:
        return f"pixel data cannot be decoded: no decoder for {syntax.name} is installed"
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.CRITICAL)  # each failing decoder logs its traceback: one line here says it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.pixel_array
    except Exception as err:  # noqa: BLE001 - decoders raise anything from ValueError to RuntimeError
        return f"pixel data cannot be decoded ({syntax.name}: {type(err).__name__}: {str(err).splitlines()[0][:200]})"
    finally:
        pydicom_logger.setLevel(level)
    return None


class CheckedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """``DICOMDataLoaderOperator`` that skips, with a warning naming it, any file that is not a usable DICOM
    instance (non-DICOM, truncated, a duplicate SOP instance), and says plainly when nothing usable is left.

    Outputs ``dicom_study_list`` (List[DICOMStudy]) as the SDK loader does.
    """

    def load_data_to_studies(self, input_path: Path):
        input_path = Path(input_path)
        if not input_path.is_dir():
            raise FusionInputError(f"input folder {input_path} does not exist or is not a folder")
        try:  # rglob passes over a folder it may not list: say so, rather than call the folder empty
            with os.scandir(input_path):
                pass
        except OSError as err:
            raise FusionInputError(f"input folder {input_path} cannot be read ({err.strerror or err})") from err
        if not any(p.is_file() for p in input_path.rglob("*")):
            raise FusionInputError(f"input folder {input_path} is empty: expected DICOM files of an MR and a PT series")
        return super().load_data_to_studies(input_path)

    # SDK 4.0's _load_data only survives InvalidDicomError: a truncated file raises EOFError and ends the run,
    # and a file cut inside its pixel data loads and corrupts the volume. Filtering the list first keeps the SDK's
    # grouping of studies and series unchanged.
    def _load_data(self, files: list[str]):
        usable, seen_uids = [], set()
        for path in sorted(files):
            problem, uid = pixel_data_problem(path)
            if problem is None:
                if uid in seen_uids:
                    problem = "a second copy of a SOP instance already read"
                seen_uids.add(uid)
            if problem is not None:
                logger.warning("skipping %s: %s", path, problem)
                continue
            usable.append(path)
        if not usable:
            raise FusionInputError(f"no usable DICOM file among the {len(files)} files in the input folder")
        logger.info("reading %d DICOM files (%d skipped)", len(usable), len(files) - len(usable))
        return super()._load_data(usable)
