"""The SDK's DICOM study loader, with each file checked first so that one bad file cannot stop a study."""

from __future__ import annotations

import logging
import os
import stat
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from monai.deploy.operators import DICOMDataLoaderOperator

from ..errors import FusionInputError
from ..forked_parts import available_processes, run_in_forked_parts
from ..multiframe import is_multiframe, single_frame_files

logger = logging.getLogger(__name__)

# Checking a file means parsing all of it and decoding a compressed one: pure Python, about 3 ms a file on the
# development machine (0.7-0.8 s for the sample study's 271), so the files are checked in several processes
# (``forked_parts``), each taking a few dozen at least.
MIN_FILES_PER_PROCESS = 32
# a process still checking after this long per file (a large JPEG 2000 multi-frame image: seconds) is stuck
SECONDS_PER_FILE = 5.0


def check_files(paths: list[str], processes: int) -> list[tuple[str | None, str | None, str]]:
    """``pixel_data_problem`` of each of ``paths``, in order, in up to ``processes`` processes."""
    parts = run_in_forked_parts(lambda part: [pixel_data_problem(paths[i]) for i in part], len(paths), processes,
                                "checking files", SECONDS_PER_FILE)
    return [tuple(verdict) for part in parts for verdict in part]


def pixel_data_problem(path: str) -> tuple[str | None, str | None, str]:
    """(why the file at ``path`` cannot be used as an image instance or ``None`` when it can, its SOP Instance UID,
    the Modality of a multi-frame MR or PT image, else "").

    Reads the whole file with pydicom and, for native (uncompressed) transfer syntaxes, checks that the
    pixel data holds every byte that Rows x Columns x Samples x Frames x BitsAllocated promises: a file cut
    short in transfer otherwise loads without complaint and fails, or worse, later.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            ds.decode()  # every element now, not lazily later in another operator
    except RecursionError:
        return "not a readable DICOM file (sequences nested too deeply)", None, ""
    except Exception as err:  # noqa: BLE001 - whatever a damaged file makes pydicom raise, the file is unreadable
        return f"not a readable DICOM file ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})", None, ""
    if "SOPInstanceUID" not in ds:
        return "no SOP Instance UID", None, ""
    uid = str(ds.SOPInstanceUID)
    missing = [k for k in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID") if not str(ds.get(k, "") or "")]
    if missing:  # the SDK would drop such an instance without a word
        return f"no {' and no '.join(missing)}", uid, ""
    if "PixelData" not in ds:
        return None, uid, ""  # not an image (e.g. a report): the SDK loader sorts it out by SOP class
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if not syntax.is_transfer_syntax:
        return f"unknown transfer syntax {syntax}", uid, ""
    if syntax.is_compressed:
        problem = decoding_problem(ds, syntax)
        return problem, uid, multiframe_modality(ds) if problem is None else ""
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError) as err:
        return f"image attributes missing or malformed ({err})", uid, ""
    got = len(ds.PixelData)
    if got < expected:
        return f"pixel data truncated ({got} of {expected} bytes)", uid, ""
    return None, uid, multiframe_modality(ds)


def multiframe_modality(ds) -> str:
    """The Modality of a multi-frame MR or PT image (``multiframe.py`` reads it as single frames), else ""."""
    return str(ds.Modality) if is_multiframe(ds) else ""


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

    Outputs ``dicom_study_list`` (List[DICOMStudy]) as the SDK loader does. The files are checked by ``processes``
    processes: None, as many as ``forked_parts.available_processes`` finds useful; 1, this one alone.
    """

    def __init__(self, fragment, *args, processes: int | None = None, **kwargs):
        self.processes = processes
        super().__init__(fragment, *args, **kwargs)

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
    # SDK 4.0 lists a folder it may not read with a traceback, and passes FIFOs and sockets on (reading one blocks
    # forever): unreadable folders and non-regular files are skipped here, each named.
    def _list_files(self, path, files: list[str]):
        try:
            entries = sorted(os.listdir(path))
        except OSError as err:
            logger.warning("skipping folder %s: it cannot be read (%s)", path, err.strerror or err)
            return
        for name in entries:
            item = os.path.join(path, name)
            if os.path.isdir(item):
                self._list_files(item, files)
            else:
                files.append(item)

    def _load_data(self, files: list[str]):
        regular_files = []
        for path in sorted(files):
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError as err:
                logger.warning("skipping %s: it cannot be read (%s)", path, err.strerror or err)
                continue
            if not regular:
                logger.warning("skipping %s: not a regular file (a FIFO, socket or device)", path)
                continue
            regular_files.append(path)
        processes = self.processes or available_processes(len(regular_files), MIN_FILES_PER_PROCESS)
        verdicts = check_files(regular_files, processes)
        usable, first_path_of, unusable, damaged, multiframe = [], {}, {}, [], {}
        for path, (problem, uid, frames) in zip(regular_files, verdicts):
            if problem is None:
                if uid in first_path_of:
                    if Path(path).read_bytes() != Path(first_path_of[uid]).read_bytes():
                        raise FusionInputError(f"{first_path_of[uid]} and {path} carry the same SOP Instance UID "
                                               "with different content: which one is the image is unknown")
                    logger.warning("skipping %s: a second copy of %s", path, first_path_of[uid])
                    continue
                first_path_of[uid] = path
                usable.append(path)
                if frames:
                    multiframe[path] = frames
                continue
            logger.warning("skipping %s: %s", path, problem)
            damaged.append((path, problem, uid))
        for path, problem, uid in damaged:
            if uid in first_path_of:
                continue  # a damaged copy of an instance that was read intact
            series_uid = series_of_damaged_file(path)
            if series_uid:
                unusable.setdefault(series_uid, []).append(f"{path} ({problem})")
            elif looks_like_dicom(path):
                # Its series cannot be told, so any series may have lost an image (a lost first or last slice
                # leaves no gap to see): the study is refused rather than fused from what may be incomplete.
                raise FusionInputError(f"{path} looks like a DICOM file but cannot be read ({problem}); the study "
                                       "may be incomplete: send it again")
        if not usable:
            raise FusionInputError(f"no usable DICOM file among the {len(files)} files in the input folder")
        logger.info("reading %d DICOM files (%d skipped)", len(usable), len(files) - len(usable))
        studies = super()._load_data(expand_multiframe(usable, multiframe))
        # A series that lost a member is incomplete: the volume operator refuses it if it is the one chosen
        # (a lost first or last slice leaves no gap to see, and the volume would silently be shorter).
        for study in studies:
            for series in study.get_all_series():
                setattr(series, UNUSABLE_MEMBERS, unusable.get(str(series.SeriesInstanceUID), []))
        return studies


UNUSABLE_MEMBERS = "dcfb_unusable_members"


def expand_multiframe(paths: list[str], multiframe: dict[str, str]) -> list:
    """Each of ``paths`` that is in ``multiframe`` (a multi-frame image, by path: its Modality, MR or PT) replaced by
    its frames as single-frame files in memory (multiframe.py)."""
    out = []
    for path in paths:
        if path in multiframe:
            frames = single_frame_files(path)
            logger.info("%s: a multi-frame %s image, read as %d frames", path, multiframe[path], len(frames))
            out.extend(frames)
        else:
            out.append(path)
    return out


DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def looks_like_dicom(path: str) -> bool:
    """A DICOM file name, or the DICM prefix after the 128-byte preamble (an empty .dcm file counts)."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def series_of_damaged_file(path: str) -> str | None:
    """The Series Instance UID of a file that could not be used, when its header still says it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SeriesInstanceUID"])
        return str(header.SeriesInstanceUID) if "SeriesInstanceUID" in header else None
    except Exception:  # noqa: BLE001 - a header too damaged to say: the warning above names the file
        return None
