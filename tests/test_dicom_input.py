"""DICOM as hospitals send it: every transfer syntax a PACS may use, and headers that break the standard.

Test files are made from the project's own study with Debian's DICOM tools (gdcmconv from libgdcm-tools, dcmconv
and dcmcjpeg from dcmtk), as a PACS or scanner would write them; real scanner files cannot be shipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from conftest import ROOT, dciodvfy_errors

from deploy_app.source_header import IMPLEMENTATION_CLASS_UID

TOOLS = ("gdcmconv", "dcmconv", "dcmcjpeg", "dcmodify")
# name: (tool command before "in out", lossless)
SYNTAXES = {
    "explicit_big_endian": (["dcmconv", "+tb"], True),
    "deflated": (["dcmconv", "+td"], True),
    "jpeg_lossless_14": (["gdcmconv", "--jpeg"], True),
    "jpeg_ls": (["gdcmconv", "--jpegls"], True),
    "jpeg2000_lossless": (["gdcmconv", "--j2k"], True),
    "rle": (["gdcmconv", "--rle"], True),
    "jpeg2000_lossy": (["gdcmconv", "--j2k", "--lossy", "-q", "60"], False),
    "jpeg_extended_12bit": (["dcmcjpeg", "+ee"], False),
    "jpeg_baseline_8bit": (["dcmcjpeg", "+eb"], False),
}
# Each run transcodes the MR to one syntax and the PT to another, so that five app runs cover nine syntaxes.
RUNS = [("jpeg_lossless_14", "rle"), ("jpeg_ls", "jpeg2000_lossless"), ("explicit_big_endian", "deflated"),
        ("jpeg2000_lossy", "jpeg_extended_12bit"), ("jpeg_baseline_8bit", None)]


def require_tools() -> None:
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        if os.environ.get("DCFB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{', '.join(missing)} missing: scripts/run_tests.sh installs dcmtk and libgdcm-tools as root")
        pytest.skip(f"{', '.join(missing)} missing (apt-get install dcmtk libgdcm-tools)")


def run_app(study: Path, out: Path, model: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy_app", "-i", str(study), "-o", str(out), "-m", model],
                          cwd=ROOT, capture_output=True, text=True)


def transcode(folder: Path, syntax: str) -> None:
    command, lossless = SYNTAXES[syntax]
    for path in sorted(folder.glob("*.dcm")):
        original_type = "\\".join(pydicom.dcmread(path, stop_before_pixels=True).ImageType)
        done = subprocess.run([*command, str(path), str(path) + ".new"], capture_output=True, text=True)
        assert done.returncode == 0, f"{command} {path}: {done.stdout}{done.stderr}"
        os.replace(str(path) + ".new", path)
        if not lossless:
            # gdcmconv marks lossy output DERIVED (as the standard asks); an archive that compresses on storage
            # keeps the scanner's ImageType, and the selection rules ask for ORIGINAL
            subprocess.run(["dcmodify", "-nb", "-m", f"(0008,0008)={original_type}", str(path)], check=True,
                           capture_output=True)


def fused(out: Path) -> np.ndarray:
    files = sorted((out / "fused_dicom").glob("*.dcm"))
    return np.stack([pydicom.dcmread(p).pixel_array for p in files]).astype(np.float32)


@pytest.fixture(scope="module")
def reference_fusion(tiny_study, app_bundle, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("reference") / "out"
    proc = run_app(Path(tiny_study), out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return fused(out)


@pytest.mark.parametrize("mr_syntax,pt_syntax", RUNS, ids=[f"MR-{m}+PT-{p}" for m, p in RUNS])
def test_every_transfer_syntax_is_read(mr_syntax, pt_syntax, tiny_study, app_bundle, reference_fusion, tmp_path):
    require_tools()
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    transcode(study / "MR", mr_syntax)
    if pt_syntax:
        transcode(study / "PT", pt_syntax)
    uid = pydicom.dcmread(next((study / "MR").glob("*.dcm")), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert uid != pydicom.uid.ExplicitVRLittleEndian
    out = tmp_path / "out"
    proc = run_app(study, out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = fused(out)
    lossless = SYNTAXES[mr_syntax][1] and (pt_syntax is None or SYNTAXES[pt_syntax][1])
    if lossless:
        assert np.array_equal(result, reference_fusion), f"{mr_syntax}/{pt_syntax}: decoded values differ"
    else:
        # Lossy codecs change the inputs (8- and 12-bit JPEG: dcmcjpeg maps each slice's own value range onto the
        # bits, a slice-wise rescale on top of the loss): the fusion must stay the same image.
        r = np.corrcoef(result.ravel(), reference_fusion.ravel())[0, 1]
        assert r > 0.95, f"{mr_syntax}/{pt_syntax}: correlation with the uncompressed study's fusion {r:.3f}"


def test_undecodable_pixel_data_is_named_before_any_heavy_work(tiny_study, app_bundle, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    broken, unknown = sorted((study / "MR").glob("*.dcm"))[5:7]
    ds = pydicom.dcmread(broken)  # a JPEG 2000 codestream that stops after its first markers
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 4])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
    ds.save_as(broken, enforce_file_format=True)
    ds = pydicom.dcmread(unknown)  # a transfer syntax UID that is no transfer syntax
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(unknown)
    proc = run_app(study, tmp_path / "out", app_bundle)
    logs = proc.stdout + proc.stderr
    assert f"skipping {broken}: pixel data cannot be decoded" in logs, logs[-3000:]
    assert f"skipping {unknown}: unknown transfer syntax 1.2.3.4.5.6.7" in logs, logs[-3000:]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # the series then lacks slices: refused


def break_header(path: Path, k: int) -> None:
    """What real MR exports carry (and what another toolkit leaves out)."""
    ds = pydicom.dcmread(path)
    for keyword in ("ScanningSequence", "SequenceVariant", "EchoTime", "RepetitionTime", "MRAcquisitionType",
                    "PatientPosition", "ScanOptions", "PositionReferenceIndicator", "ReferringPhysicianName"):
        if keyword in ds:
            delattr(ds, keyword)
    with warnings.catch_warnings():  # pydicom warns of each invalid value: writing them is the point here
        warnings.simplefilter("ignore")
        ds.PatientSex = "0000"
        ds.PatientBirthDate = "1"
        ds.StudyTime = "99"
        ds.PixelAspectRatio = [1, 1]
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]
        ds.EchoTrainLength = "1.5"
        ds.add_new(0x00291010, "OB", b"\x01\x02private")
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"csa")
        ds.save_as(path)


def test_real_header_values_never_stop_the_writer_and_outputs_pass_dciodvfy(tiny_study, app_bundle, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    for k, path in enumerate(sorted((study / "MR").glob("*.dcm"))):
        break_header(path, k)
    for path in sorted((study / "PT").glob("*.dcm")):  # the same patient's odd values in the PT export
        ds = pydicom.dcmread(path)
        ds.PatientSex, ds.PatientBirthDate = "0000", "1"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path)
    source_errors = dciodvfy_errors(str(sorted((study / "MR").glob("*.dcm"))[0]))
    assert source_errors, "the broken source should itself fail dciodvfy"
    out = tmp_path / "out"
    proc = run_app(study, out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in sorted(out.rglob("*.dcm")):
        assert dciodvfy_errors(str(path)) == [], path
        ds = pydicom.dcmread(path)
        assert ds.PatientSex in ("", None)  # '0000' is not carried
        assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert ds.file_meta.ImplementationVersionName.startswith("DCFB_")
        assert not [e for e in ds if e.tag.is_private]
    status = json.loads((out / "fusion_status.json").read_text())
    assert status["status"] == "done"



def _rotate_in_plane(degrees: float):
    def edit(ds):
        row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
        a = np.deg2rad(degrees)
        ds.ImageOrientationPatient = [*(np.cos(a) * row + np.sin(a) * col), *(-np.sin(a) * row + np.cos(a) * col)]
    return edit


def _set(**values):
    def edit(ds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for keyword, value in values.items():
                setattr(ds, keyword, value)
    return edit


def _shift_sideways(mm: float):
    def edit(ds):
        row = np.asarray(ds.ImageOrientationPatient[:3], float)
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient, float) + mm * row)
    return edit


def _text_vr(keyword: str):
    def edit(ds):
        element = ds[keyword]  # the number kept, its VR text (CS): pydicom then hands the SDK a string
        ds[keyword] = pydicom.DataElement(element.tag, "CS", str(element.value))
    return edit


def _modality_lut(ds):
    item = pydicom.Dataset()
    item.LUTDescriptor, item.ModalityLUTType = [256, 0, 16], "US"
    item.LUTData = np.arange(256, dtype=np.uint16).tobytes()
    ds.ModalityLUTSequence = [item]


# (series, edit of the middle image, what the refusal says): the mutations a fuzz run found passing silently
INCONSISTENT = {
    "slice rotated 10 degrees in plane": ("MR", _rotate_in_plane(10), "oriented differently"),
    "slice rotated 90 degrees in plane": ("MR", _rotate_in_plane(90), "oriented differently"),
    "slice shifted 20 mm sideways": ("PT", _shift_sideways(20), "shifted 20.00 mm within the image plane"),
    "PET slice shifted 1 mm sideways (under half its pixel)": ("PT", _shift_sideways(1), "shifted 1.00 mm within the image plane"),
    "RescaleIntercept under a text VR": ("MR", _text_vr("RescaleIntercept"), "RescaleSlope or RescaleIntercept"),
    "doubled PixelSpacing on one file": ("MR", lambda ds: _set(PixelSpacing=[2 * float(v) for v in ds.PixelSpacing])(ds),
                                         "another PixelSpacing"),
    "RescaleSlope 1e30": ("PT", _set(RescaleSlope="1e30"), "times the series' typical slice maximum"),
    "MONOCHROME1": ("MR", _set(PhotometricInterpretation="MONOCHROME1"), "PhotometricInterpretation 'MONOCHROME1'"),
    "INVERSE presentation LUT": ("MR", _set(PresentationLUTShape="INVERSE"), "PresentationLUTShape 'INVERSE'"),
    "Modality LUT": ("MR", _modality_lut, "has a Modality LUT"),
    "another PatientID in the series": ("MR", _set(PatientID="SOMEONE-ELSE-99"), "another PatientID"),
    "NaN orientation": ("MR", _set(ImageOrientationPatient=["nan", 0, 0, 0, 1, 0]), "no valid ImageOrientationPatient"),
    "orientation with 5 values": ("PT", _set(ImageOrientationPatient=[1, 0, 0, 0, 1]), "no valid ImageOrientationPatient"),
    "PixelSpacing 0": ("MR", _set(PixelSpacing=[0, 0]), "no valid PixelSpacing"),
    "RescaleSlope 0": ("PT", _set(RescaleSlope="0"), "RescaleSlope or RescaleIntercept"),
    "RescaleIntercept empty": ("MR", _set(RescaleIntercept=None), "RescaleSlope or RescaleIntercept"),
    "one image's Series Instance UID damaged": ("MR", _set(SeriesInstanceUID="1.2.3.999"), "same series number"),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_inconsistent_series_is_refused_naming_the_file(case, tiny_study, app_bundle, tmp_path):
    series, edit, message = INCONSISTENT[case]
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    files = sorted((study / series).glob("*.dcm"))
    target = files[len(files) // 2]
    ds = pydicom.dcmread(target)
    edit(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(target)
    out = tmp_path / "out"
    proc = run_app(study, out, app_bundle)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dcfb-fusion: refused:") and message in last, last
    assert str(target) in last or case == "doubled PixelSpacing on one file", last
    assert "SOMEONE-ELSE-99" not in proc.stdout + proc.stderr
    assert os.listdir(out) == ["fusion_status.json"]


def test_localizer_and_derived_series_are_left_out_and_ties_broken_by_stated_rules(tiny_study, app_bundle, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    mr_files = sorted((study / "MR").glob("*.dcm"))
    # a 3-plane localizer named like the T1 (as scanners do), and a derived copy of the T1
    localizer = study / "LOC"
    localizer.mkdir()
    planes = ([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1])
    uid = pydicom.uid.generate_uid()
    for k, path in enumerate(mr_files[:9]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber = uid, pydicom.uid.generate_uid(), 1
        ds.SeriesDescription, ds.ImageType = "T1 3-plane loc", ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ImageOrientationPatient = planes[k % 3]
        ds.save_as(localizer / f"LOC{k:03d}.dcm")
    derived = study / "DER"
    derived.mkdir()
    uid = pydicom.uid.generate_uid()
    for path in mr_files:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        ds.save_as(derived / path.name)
    # and a second copy of the T1 with the same number of images and thinner slices recorded: the tie-break
    thin = study / "THIN"
    thin.mkdir()
    thin_uid = pydicom.uid.generate_uid()
    for path in mr_files:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SliceThickness = thin_uid, pydicom.uid.generate_uid(), "0.5"
        ds.SeriesNumber = 77
        ds.save_as(thin / path.name)
    out = tmp_path / "out"
    proc = run_app(study, out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    assert "orientations (a localizer)" in logs
    assert uid not in logs.split("Series Selection finalized")[-1]  # the derived copy: not ORIGINAL, never chosen
    assert f"2 MR series match the rules 'T1-weighted MR'; using {thin_uid}" in logs
    assert "rules: most images, thinnest slices, 3D, highest series number, latest, UID" in logs
    summary = json.loads((out / "fusion_summary.json").read_text())
    assert summary["source_mr_series_instance_uid"] == thin_uid


def test_preview_is_radiological_labelled_and_at_true_aspect():
    from deploy_app.pictures import preview_planes

    volume = np.zeros((40, 50, 10), np.float32)  # RAS [X, Y, Z], 1 x 1 x 6 mm voxels (thick slices)
    volume[30:36, 5:15, 3:7] = 1.0  # a marker in the patient's right (high X), posterior (low Y)
    preview = {"mri": volume, "pet": volume, "fused": volume, "spacing": (1.0, 1.0, 6.0)}
    planes = preview_planes(preview)
    axial = planes["axial"]["cut"](volume)
    rows, cols = np.nonzero(axial)
    assert cols.max() < axial.shape[1] / 2, "the patient's right must be on the viewer's left"
    assert rows.max() < axial.shape[0] / 2, "posterior at the bottom"
    assert planes["axial"]["labels"] == ("R", "L", "A", "P")
    coronal = planes["coronal"]
    assert coronal["labels"] == ("R", "L", "S", "I") and coronal["spacing"] == (1.0, 6.0)
    image = coronal["cut"](volume)
    assert image.shape == (10, 40) and image.shape[0] * coronal["spacing"][1] == 60  # 60 mm tall, not 10 pixels
    sagittal = planes["sagittal"]
    assert sagittal["labels"] == ("A", "P", "S", "I")
    midline = np.zeros_like(volume)
    midline[20, 5:15, 3:7] = 1.0  # posterior, in the sagittal plane through the centre
    assert np.nonzero(sagittal["cut"](midline))[1].min() >= 50 / 2  # posterior on the right of the view


def test_preview_png_is_written_with_a_colour_bar_in_the_pet_unit(tmp_path):
    from deploy_app.pictures import PetWindow, write_preview_png

    volume = np.random.default_rng(0).random((20, 24, 8)).astype(np.float32)
    window = PetWindow.of(7.5 * volume, "SUVbw")
    assert 7.0 < window.upper <= 7.5
    write_preview_png({"mri": volume, "pet": 7.5 * volume, "fused": volume, "spacing": (1.0, 1.0, 4.0)}, window,
                      tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("sop_classes", ["legacy converted", "enhanced"])
def test_multiframe_enhanced_mr_and_pet_are_read_as_their_frames(sop_classes, tiny_study, app_bundle, reference_fusion,
                                                                 tmp_path):
    """Legacy Converted Enhanced MR and PET (highdicom, from the study's own slices), and the same frames under the
    Enhanced MR and Enhanced PET SOP classes (highdicom has no constructor for those IODs: the functional-group
    structure the app reads is the same, the other Enhanced modules are not built): one file per series, the
    frames stored in shuffled order and the MR split over two files; the fusion equals the single-frame study's."""
    import highdicom as hd

    enhanced = {"MR": pydicom.uid.EnhancedMRImageStorage, "PT": pydicom.uid.EnhancedPETImageStorage}

    study = tmp_path / "study"
    rng = np.random.default_rng(3)
    for label, cls in (("MR", hd.legacy.LegacyConvertedEnhancedMRImage), ("PT", hd.legacy.LegacyConvertedEnhancedPETImage)):
        (study / label).mkdir(parents=True)
        slices = [pydicom.dcmread(p) for p in sorted(Path(tiny_study, label).glob("*.dcm"))]
        order = rng.permutation(len(slices))
        parts = [order[: len(order) // 2], order[len(order) // 2:]] if label == "MR" else [order]
        series_uid = pydicom.uid.generate_uid()
        for k, part in enumerate(parts):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = cls(legacy_datasets=[slices[i] for i in part], series_instance_uid=series_uid,
                            series_number=slices[0].SeriesNumber, sop_instance_uid=pydicom.uid.generate_uid(),
                            instance_number=k + 1)
            image.SeriesDescription = slices[0].SeriesDescription
            if sop_classes == "enhanced":
                image.SOPClassUID = image.file_meta.MediaStorageSOPClassUID = enhanced[label]
            image.save_as(study / label / f"{label}_multiframe_{k + 1}.dcm")
    out = tmp_path / "out"
    proc = run_app(study, out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a multi-frame MR image, read as" in proc.stdout + proc.stderr
    assert np.array_equal(fused(out), reference_fusion)
    first = pydicom.dcmread(sorted((out / "fused_dicom").glob("*.dcm"))[0])
    sources = {str(item.ReferencedSOPInstanceUID) for item in first.SourceImageSequence}
    multiframe_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study.rglob("*.dcm")}
    assert sources <= multiframe_uids and all("ReferencedFrameNumber" in item for item in first.SourceImageSequence)
    assert dciodvfy_errors(str(sorted((out / "fused_dicom").glob("*.dcm"))[0])) == []


def test_registration_takes_finite_inputs_only_and_stops_at_its_time_limit():
    from deploy_app.errors import FusionInputError
    from deploy_app.operators.pet_mr_alignment import register_pet_to_mr

    rng = np.random.default_rng(0)
    volume = np.zeros((24, 28, 26), np.float32)
    volume[4:20, 5:23, 4:22] = 1.0 + rng.random((16, 18, 18), dtype=np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    with pytest.raises(FusionInputError, match="did not finish within 0 s"):
        register_pet_to_mr(volume, affine, volume, affine, time_limit_s=0.0)
    broken = volume.copy()
    broken[10, 10, 10] = np.nan
    with pytest.raises(FusionInputError, match="PET voxels hold values that are not finite"):
        register_pet_to_mr(volume, affine, broken, affine)
    matrix, info = register_pet_to_mr(volume, affine, volume, affine)  # the same image: found where it is
    assert np.abs(matrix - np.eye(4)).max() < 0.5 and info["rotation_deg"] < 2
