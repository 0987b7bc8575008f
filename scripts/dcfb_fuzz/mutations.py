"""Seeded mutations of one DICOM file, each of a known kind, for fuzzing the app's DICOM input.

Kinds and what the app must do with them (``harness.expected``):
    geometry, identity, values: refuse the series naming the file, or leave the volume as it was;
    pixels: refuse, or change the volume only in the mutated slice;
    structure (bytes flipped, truncated, elements deleted or emptied, wrong VRs, transfer syntax changed without
        re-encoding, ...): refuse, skip the file, or leave the volume as it was or changed only in that slice.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

GEOMETRY, IDENTITY, VALUES, PIXELS, STRUCTURE = "geometry", "identity", "values", "pixels", "structure"


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str
    apply: Callable  # (bytes, np.random.Generator, context dict) -> bytes


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _write(ds: Dataset) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _edit(edit: Callable[[Dataset, np.random.Generator, dict], None]):
    def apply(data: bytes, rng: np.random.Generator, context: dict) -> bytes:
        ds = _read(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edit(ds, rng, context)
        return _write(ds)

    return apply


def _set(keyword: str, value):
    return _edit(lambda ds, rng, ctx: setattr(ds, keyword, value(ds, rng) if callable(value) else value))


def _delete(keyword: str):
    def edit(ds, rng, ctx):
        if keyword in ds:
            delattr(ds, keyword)

    return _edit(edit)


def _rotate(ds, rng, ctx):
    row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    a = np.deg2rad(rng.uniform(1, 90))
    ds.ImageOrientationPatient = [*(np.cos(a) * row + np.sin(a) * col), *(-np.sin(a) * row + np.cos(a) * col)]


def _shift(in_plane: bool):
    def edit(ds, rng, ctx):
        row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
        direction = row if in_plane else np.cross(row, col)
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient, float) + rng.uniform(0.5, 30) * direction)

    return edit


def _scale_spacing(ds, rng, ctx):
    factor = rng.choice([0.5, 2.0, 1.1])
    ds.PixelSpacing = [float(v) * factor for v in ds.PixelSpacing]


def _pixel_patch(data, rng, ctx):
    ds = _read(data)
    pixels = ds.pixel_array.copy()
    r, c = rng.integers(0, max(1, pixels.shape[0] - 5)), rng.integers(0, max(1, pixels.shape[1] - 5))
    info = np.iinfo(pixels.dtype)
    pixels[r:r + 5, c:c + 5] = rng.integers(max(info.min, -1000), min(info.max, 4000), (5, 5))
    ds.PixelData = pixels.tobytes()
    return _write(ds)


def _modality_lut(ds, rng, ctx):
    item = Dataset()
    item.LUTDescriptor, item.ModalityLUTType = [256, 0, 16], "US"
    item.LUTData = np.arange(256, dtype=np.uint16).tobytes()
    ds.ModalityLUTSequence = Sequence([item])


def _byte_flips(data, rng, ctx):
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 8))):
        k = int(rng.integers(132, len(buf)))  # after the preamble and DICM prefix
        buf[k] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _truncate(data, rng, ctx):
    return data[: int(rng.integers(0, len(data)))]


def _random_element(ds, rng):
    tags = [e.tag for e in ds if e.tag != 0x7FE00010]
    return ds[tags[int(rng.integers(0, len(tags)))]]


def _delete_random(ds, rng, ctx):
    del ds[_random_element(ds, rng).tag]


def _empty_random(ds, rng, ctx):
    elem = _random_element(ds, rng)
    elem.value = Sequence([]) if elem.VR == "SQ" else (b"" if elem.VR in ("OB", "OW", "UN") else None)


def _wrong_vr(ds, rng, ctx):
    elem = _random_element(ds, rng)
    if elem.VR != "SQ":
        elem.VR = str(rng.choice(["US", "DS", "UI", "CS", "OB", "FL", "IS", "DA"]))


def _syntax(uid: str):
    def apply(data, rng, ctx):
        ds = _read(data)
        ds.file_meta.TransferSyntaxUID = uid
        out = io.BytesIO()
        pydicom.filewriter.dcmwrite(out, ds, enforce_file_format=False, implicit_vr=False, little_endian=True)
        return out.getvalue()

    return apply


def _duplicate_uid(ds, rng, ctx):
    ds.SOPInstanceUID = ctx["other_sop_uid"]


def _deep_sequence(data, rng, ctx):
    """Sequences nested thousands deep, written as bytes (pydicom itself cannot write them: it recurses): an
    undefined-length Content Sequence item inside each, just before the pixel data."""
    depth = int(rng.integers(2000, 12000))
    opening = (b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"  # (0040,A730) SQ, undefined length
               b"\xfe\xff\x00\xe0\xff\xff\xff\xff")  # item, undefined length
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    at = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    if at < 0 or _read(data).file_meta.TransferSyntaxUID != pydicom.uid.ExplicitVRLittleEndian:
        raise ValueError("needs an explicit little endian file with pixel data")
    return data[:at] + opening * depth + closing * depth + data[at:]


MUTATIONS = [
    Mutation("orientation rotated in plane", GEOMETRY, _edit(_rotate)),
    Mutation("orientation NaN", GEOMETRY, _set("ImageOrientationPatient", ["nan", 0, 0, 0, 1, 0])),
    Mutation("orientation 5 values", GEOMETRY, _set("ImageOrientationPatient", [1, 0, 0, 0, 1])),
    Mutation("orientation not orthogonal", GEOMETRY, _set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0])),
    Mutation("orientation deleted", GEOMETRY, _delete("ImageOrientationPatient")),
    Mutation("position shifted in plane", GEOMETRY, _edit(_shift(True))),
    Mutation("position shifted along the normal", GEOMETRY, _edit(_shift(False))),
    Mutation("position NaN", GEOMETRY, _set("ImagePositionPatient", ["nan", 0, 0])),
    Mutation("position inf", GEOMETRY, _set("ImagePositionPatient", [0, "inf", 0])),
    Mutation("position deleted", GEOMETRY, _delete("ImagePositionPatient")),
    Mutation("position 2 values", GEOMETRY, _set("ImagePositionPatient", [0, 0])),
    Mutation("spacing scaled", GEOMETRY, _edit(_scale_spacing)),
    Mutation("spacing 0", GEOMETRY, _set("PixelSpacing", [0, 0])),
    Mutation("spacing 3 values", GEOMETRY, _set("PixelSpacing", [1, 1, 1])),
    Mutation("spacing negative", GEOMETRY, _set("PixelSpacing", [-1, 1])),
    Mutation("spacing deleted", GEOMETRY, _delete("PixelSpacing")),
    Mutation("PatientID changed", IDENTITY, _set("PatientID", "FUZZ-OTHER-ID")),
    Mutation("PatientName changed", IDENTITY, _set("PatientName", "Fuzz^Other")),
    Mutation("StudyInstanceUID changed", IDENTITY, _set("StudyInstanceUID", lambda ds, rng: pydicom.uid.generate_uid())),
    Mutation("FrameOfReferenceUID changed", IDENTITY,
             _set("FrameOfReferenceUID", lambda ds, rng: pydicom.uid.generate_uid())),
    Mutation("RescaleSlope 0", VALUES, _set("RescaleSlope", "0")),
    Mutation("RescaleSlope 1e30", VALUES, _set("RescaleSlope", "1e30")),
    Mutation("RescaleSlope NaN", VALUES, _set("RescaleSlope", "nan")),
    Mutation("RescaleIntercept 1e30", VALUES, _set("RescaleIntercept", "1e30")),
    Mutation("RescaleIntercept NaN", VALUES, _set("RescaleIntercept", "nan")),
    Mutation("MONOCHROME1", VALUES, _set("PhotometricInterpretation", "MONOCHROME1")),
    Mutation("PhotometricInterpretation empty", VALUES, _set("PhotometricInterpretation", None)),
    Mutation("INVERSE presentation LUT", VALUES, _set("PresentationLUTShape", "INVERSE")),
    Mutation("Modality LUT", VALUES, _edit(_modality_lut)),
    Mutation("PixelRepresentation deleted", VALUES, _delete("PixelRepresentation")),
    Mutation("PixelRepresentation flipped", VALUES, _set("PixelRepresentation", lambda ds, rng: 1 - int(ds.PixelRepresentation))),
    Mutation("BitsStored > BitsAllocated", VALUES, _set("BitsStored", 24)),
    Mutation("BitsAllocated 8", VALUES, _set("BitsAllocated", 8)),
    Mutation("Rows + 1", VALUES, _set("Rows", lambda ds, rng: int(ds.Rows) + 1)),
    Mutation("Columns - 1", VALUES, _set("Columns", lambda ds, rng: int(ds.Columns) - 1)),
    Mutation("SamplesPerPixel 3", VALUES, _set("SamplesPerPixel", 3)),
    Mutation("pixel patch", PIXELS, _pixel_patch),
    Mutation("bytes flipped", STRUCTURE, _byte_flips),
    Mutation("truncated", STRUCTURE, _truncate),
    Mutation("zero length", STRUCTURE, lambda data, rng, ctx: b""),
    Mutation("preamble only", STRUCTURE, lambda data, rng, ctx: b"\0" * 128 + b"DICM"),
    Mutation("element deleted", STRUCTURE, _edit(_delete_random)),
    Mutation("element emptied", STRUCTURE, _edit(_empty_random)),
    Mutation("wrong VR", STRUCTURE, _edit(_wrong_vr)),
    Mutation("syntax JPEG-LS claimed", STRUCTURE, _syntax("1.2.840.10008.1.2.4.80")),
    Mutation("syntax big endian claimed", STRUCTURE, _syntax("1.2.840.10008.1.2.2")),
    Mutation("syntax deflate claimed", STRUCTURE, _syntax("1.2.840.10008.1.2.1.99")),
    Mutation("syntax unknown", STRUCTURE, _syntax("1.2.3.4.5.6.7.8")),
    Mutation("SOPInstanceUID duplicated", STRUCTURE, _edit(_duplicate_uid)),
    Mutation("sequences nested deep", STRUCTURE, _deep_sequence),
]
