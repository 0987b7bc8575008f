"""The MONAI Deploy app end to end: real DICOM studies in, DICOM series out, read back and checked; every
refused input leaves OUT empty and the input untouched."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import packages_distributions
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import ROOT, dciodvfy_errors, read_series
from monai.bundle import ConfigWorkflow

from deploy_app.errors import FusionInputError
from deploy_app.forked_parts import contiguous_parts, run_in_forked_parts
from deploy_app.operators.fused_series_writer import RESCALE_SLOPE, write_processes

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def run_app(input_dir, output_dir, model, *flags, cwd=ROOT, app=("-m", "deploy_app"), env=None):
    cmd = [sys.executable, *app]
    if input_dir is not None:
        cmd += ["-i", str(input_dir), "-o", str(output_dir), "-m", str(model)]
    return subprocess.run([*cmd, *flags], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})


def only_status_file(out: Path, status: str = "refused") -> bool:
    """A refused or failed run leaves fusion_status.json and nothing else in OUT."""
    return os.listdir(out) == ["fusion_status.json"] and json.loads((out / "fusion_status.json").read_text())["status"] == status


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def series_files(folder) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(Path(folder).glob("*.dcm"))]


def bundle_inference(bundle: str, study: str, work: Path, **override) -> nib.Nifti1Image:
    """The bundle's own inference.json on the MR and PT of ``study`` read by MONAI's PydicomReader."""
    case = work / "data" / "case"
    case.mkdir(parents=True)
    for name, folder in (("mri", "MR"), ("pet", "PT")):
        voxels, affine = read_series(os.path.join(study, folder))
        nib.save(nib.Nifti1Image(voxels.astype(np.float32), affine), case / f"{name}.nii.gz")
    datalist = {"training": [], "validation": [], "testing": [{"id": "case", "mri": "case/mri.nii.gz",
                                                             "pet": "case/pet.nii.gz"}]}
    (work / "data" / "datalist.json").write_text(json.dumps(datalist))
    wf = ConfigWorkflow(config_file=os.path.join(bundle, "configs", "inference.json"),
                        meta_file=os.path.join(bundle, "configs", "metadata.json"), workflow_type="infer",
                        bundle_root=bundle, dataset_dir=str(work / "data"), output_dir=str(work / "eval"), **override)
    wf.initialize()
    wf.run()
    wf.finalize()
    return nib.load(work / "eval" / "case" / "mri_fused.nii.gz")


def check_fused_series_geometry(out: Path, study: str) -> list[pydicom.Dataset]:
    mr = {ds.SOPInstanceUID: ds for ds in series_files(Path(study) / "MR")}
    pt_uids = {ds.SOPInstanceUID for ds in series_files(Path(study) / "PT")}
    fused = series_files(out / "fused_dicom")
    assert len(fused) == len(mr)
    assert len({ds.SeriesInstanceUID for ds in fused}) == 1
    pt_referenced = 0
    for ds in fused:
        source = mr[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "Rows", "Columns"):
            assert ds[keyword].value == source[keyword].value, keyword
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            np.testing.assert_allclose(np.asarray(ds[keyword].value, float), np.asarray(source[keyword].value, float))
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID not in mr
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and "DerivationDescription" in ds
        assert ds.SOPClassUID == source.SOPClassUID and "WindowCenter" in ds
        refs = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence[1:]}
        assert refs <= pt_uids
        pt_referenced += bool(refs)
    assert pt_referenced > len(fused) // 2  # the PET covers the brain, so most MR slices meet PT images
    colour = series_files(out / "fusion_color_dicom")
    assert len(colour) == len(fused) and colour[0].PhotometricInterpretation == "RGB"
    # the colour bar to the right of each image: the 'hot' map from white (top) to black (bottom)
    assert colour[0].Rows == fused[0].Rows and colour[0].Columns > fused[0].Columns + 6
    bar = colour[0].pixel_array[:, fused[0].Columns + 4].astype(int).sum(axis=1)
    assert bar[0] > 700 and bar[-1] < 30 and np.all(np.diff(bar) <= 3)
    assert colour[0].StudyInstanceUID == fused[0].StudyInstanceUID
    for path in [*sorted((out / "fused_dicom").iterdir()), *sorted((out / "fusion_color_dicom").iterdir())]:
        assert dciodvfy_errors(str(path)) == [], path
    return fused


def test_axial_study_fused_read_back_equals_bundle_inference(tiny_study, app_bundle, tmp_path):
    out = tmp_path / "out"
    proc = run_app(tiny_study, out, app_bundle, "--nifti", "--preview")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["fused.nii.gz", "fused_dicom", "fusion_color_dicom", "fusion_status.json",
                                       "fusion_summary.json", "preview.png"]
    assert json.loads((out / "fusion_status.json").read_text()) == {"status": "done", "exit_code": 0, "reason": ""}
    check_fused_series_geometry(out, tiny_study)
    summary = json.loads((out / "fusion_summary.json").read_text())
    assert summary["alignment"]["performed"] is False and summary["alignment"]["pet_signal_in_mr_field_of_view"] > 0.9

    fused, fused_affine = read_series(str(out / "fused_dicom"))
    mr, mr_affine = read_series(os.path.join(tiny_study, "MR"))
    assert fused.shape == mr.shape
    np.testing.assert_allclose(fused_affine, mr_affine, atol=1e-4)
    reference = bundle_inference(app_bundle, tiny_study, tmp_path / "bundle")
    np.testing.assert_allclose(reference.affine, mr_affine, atol=1e-4)
    assert np.abs(fused - reference.get_fdata()).max() <= float(RESCALE_SLOPE) * 0.5 + 1e-5

    logs = proc.stdout + proc.stderr
    patient = pydicom.dcmread(next((Path(tiny_study) / "MR").iterdir()))
    assert str(patient.PatientName) not in logs and str(patient.PatientID) not in logs


def test_pet_emphasis_flag_and_variable_reach_the_network_and_the_outputs(tiny_study, app_bundle, tmp_path):
    out = tmp_path / "out"
    proc = run_app(tiny_study, out, app_bundle, env={"DCFB_PET_EMPHASIS": "0.9"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "fusion_summary.json").read_text())["pet_emphasis"] == 0.9
    assert "PET emphasis 0.90" in series_files(out / "fused_dicom")[0].DerivationDescription
    fused, _ = read_series(str(out / "fused_dicom"))
    reference = bundle_inference(app_bundle, tiny_study, tmp_path / "bundle", pet_emphasis=0.9).get_fdata()
    assert np.abs(fused - reference).max() <= float(RESCALE_SLOPE) * 0.5 + 1e-5
    default = bundle_inference(app_bundle, tiny_study, tmp_path / "default").get_fdata()
    # the emphasis changed the fusion beyond the stored rounding (on this small synthetic head the 0.5.0 network moves
    # about 6 steps between lambda 0.5 and 0.9; on the cohort's heads the regional r goes from 0.95 to 1.0)
    assert np.abs(default - reference).max() > 2 * float(RESCALE_SLOPE)
    refused = run_app(tiny_study, tmp_path / "out2", app_bundle, "--pet_emphasis", "1.5")
    assert refused.returncode == 2 and "pet_emphasis" in refused.stderr and not (tmp_path / "out2").exists()


def test_cpu_optimised_model_gives_the_plain_models_fusion(tiny_study, app_bundle, tmp_path):
    """The default CPU path (weights in channels-last 3D layout, freed memory kept for reuse) against the plain model
    (DCFB_CPU_OPTIMIZE=0): the same stored values (within one 12-bit step), and the summary and the log say which
    ran."""
    runs = {}
    for name, env in (("optimised", {}), ("plain", {"DCFB_CPU_OPTIMIZE": "0"})):
        proc = run_app(tiny_study, tmp_path / name, app_bundle, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runtime = json.loads((tmp_path / name / "fusion_summary.json").read_text())["runtime"]
        if name == "optimised":  # glibc, as on every Linux machine the tests run on
            assert runtime.pop("memory").startswith("freed memory kept for reuse (glibc mallopt")
            assert "CPU memory: freed memory kept for reuse" in proc.stderr + proc.stdout
        processes = write_processes(len(os.listdir(Path(tiny_study) / "MR"))) if name == "optimised" else 1
        assert runtime == {"device": "cpu", "cpu_optimized": name == "optimised", "write_processes": processes}
        runs[name] = np.stack([ds.pixel_array for ds in series_files(tmp_path / name / "fused_dicom")]).astype(int)
    assert np.abs(runs["optimised"] - runs["plain"]).max() <= 1


# what may differ between two runs' objects: their own UIDs and when they were made
RUN_SPECIFIC = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID", "FileMetaInformationGroupLength",
                "ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "SeriesDate", "SeriesTime",
                "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "ContributionDateTime"}


def comparable(ds: pydicom.Dataset) -> dict:
    return {elem.keyword or str(elem.tag): elem.value for elem in [*getattr(ds, "file_meta", []), *ds]
            if elem.keyword not in RUN_SPECIFIC and elem.VR != "SQ"} | {"items": [
                comparable(item) for elem in ds if elem.VR == "SQ" for item in elem.value]}


def test_slices_written_by_several_processes_equal_those_written_by_one(tiny_study, app_bundle, tmp_path):
    """Three writing processes give the objects one gives, element for element but for each run's own UIDs and
    times; every SOP Instance UID is unique across both runs. (A study without registration: SimpleITK's
    registration differs between runs in the 11th digit, and with it the PET resampled onto the MR grid. The
    registered study's outputs, also written by several processes, are checked in the oblique study's test.)"""
    objects = {}
    for processes in ("1", "3"):
        out = tmp_path / processes
        proc = run_app(tiny_study, out, app_bundle, env={"DCFB_DICOM_PROCESSES": processes})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((out / "fusion_summary.json").read_text())["runtime"]["write_processes"] == int(processes)
        logs = proc.stderr + proc.stdout
        slices = len(os.listdir(Path(tiny_study) / "MR"))
        assert (f"writing slices: {slices} in 3 processes" in logs) == (processes == "3"), logs[-3000:]
        assert ("checking files: " in logs) == (processes == "3")
        objects[processes] = {str(p.relative_to(out)): pydicom.dcmread(p) for p in sorted(out.rglob("*.dcm"))}
    one, three = objects["1"], objects["3"]
    assert list(one) == list(three) and len(one) > 3 * 16
    assert {name.split("/")[0] for name in one} == {"fused_dicom", "fusion_color_dicom"}
    for name in one:
        assert comparable(one[name]) == comparable(three[name]), name
    uids = [ds.SOPInstanceUID for run in (one, three) for ds in run.values()]
    assert len(set(uids)) == len(uids)
    bad = run_app(tiny_study, tmp_path / "bad", app_bundle, "--dicom_processes", "0")
    assert bad.returncode == 2 and "dicom_processes" in bad.stderr and not (tmp_path / "bad").exists()


def _items_work(folder: Path, fail_at: dict):
    """Work for ``run_in_forked_parts``: one marker file per item, the part's items as its result; at the items named
    in ``fail_at`` it raises, dies or hangs as said."""

    def work(part):
        for k in part:
            what = fail_at.get(k)
            if what == "input":
                raise FusionInputError(f"MR image {k}: FrameOfReferenceUID is not a valid value")
            if what == "internal":
                raise ValueError("an encoder's bug")
            if what == "die":
                os._exit(9)
            if what == "hang":
                time.sleep(600)
            (folder / f"{k:03d}").write_text("written")
        return list(part)

    return work


@pytest.mark.parametrize("fail_at, error, message", [
    ({}, None, None),
    ({70: "input"}, FusionInputError, "MR image 70: FrameOfReferenceUID is not a valid value"),
    ({70: "internal"}, RuntimeError, "writing slices 51-75 failed in a child process: ValueError: an encoder's bug"),
    ({99: "die"}, RuntimeError, "writing slices 76-100 failed in a child process: the process ended without an "
                                "answer (exit status 9)"),
    ({30: "hang"}, RuntimeError, "writing slices 26-50 failed in a child process: no answer within 2 s"),
    ({3: "internal", 80: "hang"}, ValueError, "an encoder's bug"),
])
def test_forked_parts_give_results_in_order_report_each_failure_and_leave_no_child(
        fail_at, error, message, tmp_path):
    """``run_in_forked_parts``, which reads and writes the app's DICOM files: four parts of 25 items, the first in
    this process. The results come back in order; an input error in a child refuses as one, any other failure of a
    child is an internal error naming its items, a child that hangs is killed, and when this process's own part
    fails, the children are still waited for."""
    work = _items_work(tmp_path, fail_at)
    start = time.monotonic()
    if error is None:
        results = run_in_forked_parts(work, 100, 4, "writing slices", seconds_per_item=0.01, min_seconds=2.0)
        assert results == [list(range(k, k + 25)) for k in range(0, 100, 25)]
    else:
        with pytest.raises(error) as raised:
            run_in_forked_parts(work, 100, 4, "writing slices", seconds_per_item=0.01, min_seconds=2.0)
        assert str(raised.value) == message
    assert time.monotonic() - start < 30
    written = sorted(p.name for p in tmp_path.iterdir())
    if not fail_at:
        assert written == [f"{k:03d}" for k in range(100)]
    time.sleep(0.5)  # no child is left to write anything after the call has returned
    assert sorted(p.name for p in tmp_path.iterdir()) == written
    assert contiguous_parts(100, 4) == [range(0, 25), range(25, 50), range(50, 75), range(75, 100)]
    assert contiguous_parts(3, 4) == [range(0, 1), range(1, 2), range(2, 3)] and contiguous_parts(0, 2) == []


def test_a_part_no_process_can_be_forked_for_is_done_here(tmp_path, monkeypatch, caplog):
    """A container's process limit (fork fails with EAGAIN) costs time, not the study."""
    real_fork, forks = os.fork, []

    def fork():
        forks.append(1)
        if len(forks) == 2:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    results = run_in_forked_parts(_items_work(tmp_path, {}), 100, 4, "writing slices", 1.0)
    assert results == [list(range(k, k + 25)) for k in range(0, 100, 25)] and len(forks) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{k:03d}" for k in range(100)]
    assert "writing slices: no process could be forked (Resource temporarily unavailable): this one does 25 more" \
        in caplog.text


def test_forked_parts_die_with_the_process_that_forked_them(tmp_path):
    """A platform that cancels a job kills the app: its writing children must not go on."""
    script = (f"import os, time\nfrom deploy_app.forked_parts import run_in_forked_parts\n"
              f"def work(part):\n"
              f"    if part[0]:\n        open(os.path.join({str(tmp_path)!r}, str(os.getpid())), 'w').close()\n"
              f"    time.sleep(60)\n    return []\n"
              f"run_in_forked_parts(work, 3, 3, 'test', 100.0)\n")
    app = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 30
    while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = [int(name) for name in os.listdir(tmp_path)]
    assert len(children) == 2
    app.kill()
    app.wait()
    time.sleep(1.0)

    def running(pid: int) -> bool:  # a dead child nobody has reaped yet is a zombie ("Z"), not running
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    assert not any(running(pid) for pid in children)


def test_oblique_sagittal_mr_with_pet_in_another_frame_is_registered_and_fused(oblique_study, app_bundle, tmp_path):
    out = tmp_path / "out"
    proc = run_app(oblique_study, out, app_bundle, "--nifti")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_fused_series_geometry(out, oblique_study)
    summary = json.loads((out / "fusion_summary.json").read_text())
    assert summary["alignment"]["performed"] is True
    # the four outputs' per-slice objects written by as many processes as the machine offers (2 on CI's machine)
    assert summary["runtime"]["write_processes"] == write_processes(len(os.listdir(Path(oblique_study) / "MR")))
    # The known motion between the two sessions (RAS, MR -> PET) against what the registration found (LPS, PET -> MR).
    pet_from_mr_ras = np.asarray(json.loads((Path(oblique_study) / "export.json").read_text())["pet_world_from_mr_world"])
    found_mr_from_pet = LPS_FROM_RAS @ np.asarray(summary["mr_from_pt_world_lps"]) @ LPS_FROM_RAS
    brain = np.array([[x, y, z, 1.0] for x in (-50, 50) for y in (-60, 40) for z in (-30, 50)]).T
    error_mm = np.linalg.norm((found_mr_from_pet @ pet_from_mr_ras @ brain - brain)[:3], axis=0)
    assert error_mm.max() < 4.0, error_mm  # the tiny study's voxels are about 5 mm
    fused = nib.load(out / "fused.nii.gz").get_fdata()
    mr, _ = read_series(os.path.join(oblique_study, "MR"))
    assert fused.shape == mr.shape and np.corrcoef(fused.ravel(), mr.ravel())[0, 1] > 0.5
    check_registration_outputs(out, oblique_study, summary, pet_from_mr_ras)


def check_registration_outputs(out: Path, study: str, summary: dict, pet_from_mr_ras: np.ndarray) -> None:
    """The Spatial Registration object holds the transform the app used, and the registered PT series is the
    source PET, in SUVbw, on the MR's slices in the MR's Frame of Reference."""
    from scipy.ndimage import map_coordinates

    mr = {ds.SOPInstanceUID: ds for ds in series_files(Path(study) / "MR")}
    pt = series_files(Path(study) / "PT")
    mr_first = next(iter(mr.values()))
    assert {"registered_pet_dicom", "registration_dicom"} <= set(summary["written"])
    (reg,) = series_files(out / "registration_dicom")
    assert reg.Modality == "REG" and reg.FrameOfReferenceUID == mr_first.FrameOfReferenceUID
    assert reg.StudyInstanceUID == mr_first.StudyInstanceUID
    own, other = reg.RegistrationSequence
    assert own.FrameOfReferenceUID == mr_first.FrameOfReferenceUID and other.FrameOfReferenceUID == pt[0].FrameOfReferenceUID
    matrix = lambda item: np.asarray(item.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix, float).reshape(4, 4)  # noqa: E731
    np.testing.assert_allclose(matrix(own), np.eye(4))
    np.testing.assert_allclose(matrix(other), summary["mr_from_pt_world_lps"], atol=1e-5)
    assert {s.SeriesInstanceUID for s in reg.ReferencedSeriesSequence} == {mr_first.SeriesInstanceUID, pt[0].SeriesInstanceUID}
    assert {r.ReferencedSOPInstanceUID for r in other.ReferencedImageSequence} == {ds.SOPInstanceUID for ds in pt}

    registered = series_files(out / "registered_pet_dicom")
    assert len(registered) == len(mr) and len({ds.SeriesInstanceUID for ds in registered}) == 1
    mr_positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in mr.values()])
    for ds in registered:  # on the MR's slices, in the MR's Frame of Reference
        assert np.abs(mr_positions - np.asarray(ds.ImagePositionPatient, float)).max(axis=1).min() < 1e-3
        np.testing.assert_allclose(np.asarray(ds.ImageOrientationPatient, float), mr_first.ImageOrientationPatient, atol=1e-6)
        assert ds.Modality == "PT" and ds.FrameOfReferenceUID == mr_first.FrameOfReferenceUID
        assert ds.Units == "GML" and ds.SUVType == "BW" and list(ds.ImageType) == ["DERIVED", "PRIMARY"]
    # Against the source PET moved by the known motion between the sessions, and the SUVbw factor (QIBA) from
    # the simulator's weight, dose and uptake time: the same values on the MR's voxels.
    suv, suv_affine = read_series(str(out / "registered_pet_dicom"))
    pet, pet_affine = read_series(os.path.join(study, "PT"))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in suv.shape], indexing="ij"), -1).reshape(-1, 3)
    world = suv_affine @ np.c_[grid, np.ones(len(grid))].T
    expected = map_coordinates(pet, (np.linalg.inv(pet_affine) @ pet_from_mr_ras @ world)[:3], order=1).reshape(suv.shape)
    factor = 70.0 * 1000 / (185e6 * 2.0 ** (-2700.0 / 6586.2))
    assert summary["pet_units"]["suv_bw_factor"] == pytest.approx(factor, rel=1e-6)
    brain = expected > 0.3 * expected.max()
    assert np.corrcoef(suv[brain], expected[brain])[0, 1] > 0.9
    assert np.median(suv[brain] / expected[brain]) == pytest.approx(factor, rel=0.05)


def copy_study(study: str, dst: Path, series=("MR", "PT")) -> Path:
    dst.mkdir(parents=True)
    for name in series:
        shutil.copytree(os.path.join(study, name), dst / name)
    return dst


def edit_series(folder: Path, edit) -> None:
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)


def other_patient(ds):
    ds.PatientID, ds.PatientName = "OTHER-4711", "Other^Patient"


def far_away(ds):
    ds.ImagePositionPatient = [float(v) + (400.0 if i == 2 else 0.0) for i, v in enumerate(ds.ImagePositionPatient)]


def make_case(name: str, study: str, root: Path) -> Path:
    if name == "empty folder":
        (root / "in").mkdir()
        return root / "in"
    if name == "no PT series":
        return copy_study(study, root / "in", ("MR",))
    if name == "no MR series":
        return copy_study(study, root / "in", ("PT",))
    folder = copy_study(study, root / "in")
    if name == "different patients":
        edit_series(folder / "PT", other_patient)
    elif name == "PET not overlapping the MR":
        edit_series(folder / "PT", far_away)
    elif name == "MR slice missing":
        files = sorted((folder / "MR").glob("*.dcm"))
        files[len(files) // 2].unlink()
    return folder


@pytest.mark.parametrize("case, message", [
    ("empty folder", "is empty"),
    ("no PT series", "no PT series"),
    ("no MR series", "no MR series"),
    ("different patients", "different patients"),
    ("PET not overlapping the MR", "do not overlap"),
    ("MR slice missing", "not evenly spaced"),
])
def test_bad_study_is_refused_cleanly(case, message, tiny_study, app_bundle, tmp_path):
    folder = make_case(case, tiny_study, tmp_path)
    before = snapshot(folder)
    out = tmp_path / "out"
    proc = run_app(folder, out, app_bundle)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "refused" in proc.stderr and message in proc.stderr, proc.stderr[-3000:]
    assert only_status_file(out)
    assert message in json.loads((out / "fusion_status.json").read_text())["reason"]
    assert snapshot(folder) == before
    assert "OTHER-4711" not in proc.stdout + proc.stderr and "Other^Patient" not in proc.stdout + proc.stderr


def test_unreadable_model_and_unwritable_output_are_refused(tiny_study, app_bundle, tmp_path):
    broken = tmp_path / "broken_bundle"
    shutil.copytree(app_bundle, broken)
    (broken / "models" / "model.ts").write_bytes(b"not a TorchScript archive")
    out = tmp_path / "out"
    proc = run_app(tiny_study, out, broken)
    assert proc.returncode == 1 and "cannot be read as a TorchScript model" in proc.stderr, proc.stderr[-3000:]
    assert str(broken / "models" / "model.ts") in proc.stderr and only_status_file(out)

    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    proc = run_app(tiny_study, blocker / "out", app_bundle)
    assert proc.returncode == 1 and "cannot be written" in proc.stderr, proc.stderr[-3000:]


def test_truncated_and_non_dicom_files_are_skipped_by_name(tiny_study, app_bundle, tmp_path):
    folder = copy_study(tiny_study, tmp_path / "in")
    good = sorted((folder / "MR").glob("*.dcm"))[0].read_bytes()
    (folder / "MR" / "cut_short.dcm").write_bytes(good[: len(good) * 2 // 3])
    (folder / "notes.txt").write_text("not DICOM")
    before = snapshot(folder)
    out = tmp_path / "out"
    proc = run_app(folder, out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    assert f"skipping {folder / 'MR' / 'cut_short.dcm'}: pixel data truncated" in logs
    assert f"skipping {folder / 'notes.txt'}: not a readable DICOM file" in logs
    assert len(list((out / "fused_dicom").iterdir())) == len(list((Path(tiny_study) / "MR").iterdir()))
    assert snapshot(folder) == before


def test_failed_registration_is_refused(oblique_study, app_bundle, tmp_path):
    folder = copy_study(oblique_study, tmp_path / "in")
    rng = np.random.default_rng(0)

    def noise(ds):
        ds.PixelData = rng.integers(0, 30000, ds.pixel_array.shape, dtype=np.int16).tobytes()

    edit_series(folder / "PT", noise)
    out = tmp_path / "out"
    proc = run_app(folder, out, app_bundle)
    assert proc.returncode == 1 and "refused" in proc.stderr, proc.stderr[-3000:]
    assert "registration" in proc.stderr and "failed" in proc.stderr, proc.stderr[-3000:]
    assert only_status_file(out)


def test_several_matching_mr_series_the_choice_is_logged(tiny_study, app_bundle, tmp_path):
    folder = copy_study(tiny_study, tmp_path / "in")
    shutil.copytree(folder / "MR", folder / "MR_repeat")
    files = sorted((folder / "MR_repeat").glob("*.dcm"))
    for path in files[: len(files) // 2]:
        path.unlink()  # a shorter repeat: the full series must win
    repeat_uid = pydicom.uid.generate_uid()

    def as_repeat(ds):
        ds.SeriesInstanceUID, ds.SeriesNumber = repeat_uid, 99
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()

    edit_series(folder / "MR_repeat", as_repeat)
    out = tmp_path / "out"
    proc = run_app(folder, out, app_bundle)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    full_uid = pydicom.dcmread(sorted((folder / "MR").glob("*.dcm"))[0]).SeriesInstanceUID
    assert f"2 MR series match the rules 'T1-weighted MR'; using {full_uid}" in logs
    assert json.loads((out / "fusion_summary.json").read_text())["source_mr_series_instance_uid"] == full_uid


def test_map_layout_app_copy_runs_from_holoscan_environment(tiny_study, app_bundle, tmp_path):
    """What the MAP runs: `python3 /opt/holoscan/app` on a copy of deploy_app/ alone, the paths from the
    HOLOSCAN_* variables, and the models folder that scripts/prepare_map.sh stages for the packager."""
    app = tmp_path / "opt" / "app"
    shutil.copytree(os.path.join(ROOT, "deploy_app"), app, ignore=shutil.ignore_patterns("__pycache__"))
    stage = subprocess.run(["bash", os.path.join(ROOT, "scripts", "prepare_map.sh"), app_bundle, str(tmp_path / "map")],
                           capture_output=True, text=True)
    assert stage.returncode == 0 and "build_map.sh" in stage.stdout, stage.stderr
    models = tmp_path / "map" / "models"
    assert sorted(os.listdir(models / "dcfb_fusion" / "models")) == ["model.ts"]
    env = {"HOLOSCAN_INPUT_PATH": tiny_study, "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "output"),
           "HOLOSCAN_MODEL_PATH": str(models), "DCFB_WRITE_PREVIEW": "1",
           "PYTHONPATH": ""}  # nothing of the repository on the path
    proc = run_app(None, None, None, cwd=tmp_path, app=(str(app),), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"fused_dicom", "fusion_color_dicom", "preview.png"} <= set(os.listdir(tmp_path / "output"))


def _pins(path: str) -> dict:
    lines = Path(path).read_text().splitlines()
    return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))


def test_app_yaml_and_requirements_carry_what_the_packager_reads():
    from holoscan_cli.packager.config_reader import ApplicationConfiguration

    config = ApplicationConfiguration()
    config.read(Path(ROOT) / "deploy_app" / "app.yaml")
    assert config.title().startswith("DCFB Fusion")
    raw = config._config
    assert raw["application"]["version"] and {"cpu", "memory"} <= set(raw["resources"])

    app_pins, repo_pins = _pins(os.path.join(ROOT, "deploy_app", "requirements.txt")), _pins(os.path.join(ROOT, "requirements.txt"))
    assert all(repo_pins.get(name) == version for name, version in app_pins.items()), app_pins
    # Every third-party module that the app and the bundle code it loads import is pinned for the app.
    imported = set()
    for path in [*Path(ROOT, "deploy_app").rglob("*.py"), *Path(ROOT, "bundle", "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    distributions = packages_distributions()
    local = {"deploy_app", "scripts", "__future__"} | set(sys.stdlib_module_names)
    pinned = {name.lower() for name in app_pins}
    for module in sorted(imported - local):
        dists = {d.lower() for d in distributions.get(module, [])}
        assert dists & pinned, f"{module} ({dists}) is imported but not pinned in deploy_app/requirements.txt"


class _BrokenNetwork(torch.nn.Module):
    """Loads like the released model (it has ``pet_emphasis``) but returns an image of the wrong size: a bug."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pet_emphasis", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, 1:, 1:, 1:]


def test_internal_error_is_one_line_exit_3_a_logged_traceback_and_only_a_status_file(tiny_study, app_bundle, tmp_path):
    bundle = tmp_path / "broken_bundle"
    shutil.copytree(app_bundle, bundle)
    torch.jit.script(_BrokenNetwork()).save(str(bundle / "models" / "model.ts"))
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = run_app(tiny_study, out, bundle, env={"HOLOSCAN_LOGS_PATH": str(logs)})
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dcfb-fusion: internal error (") and f"traceback in {logs}" in last, last
    assert "Traceback (most recent call last)" not in proc.stderr
    [log] = logs.glob("dcfb-fusion-error-*.log")
    assert "Traceback (most recent call last)" in log.read_text()
    assert os.listdir(out) == ["fusion_status.json"]
    status = json.loads((out / "fusion_status.json").read_text())
    assert status["status"] == "failed" and status["exit_code"] == 3 and status["traceback_log"] == str(log)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_input_folder_the_user_cannot_read_is_refused_as_unreadable_not_empty(tiny_study, app_bundle, tmp_path):
    study = copy_study(tiny_study, tmp_path / "in")
    study.chmod(0o000)
    try:
        # root without the capabilities that override file modes: it meets the folder as another user would
        proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m",
                               "deploy_app", "-i", str(study), "-o", str(tmp_path / "out"), "-m", app_bundle],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        study.chmod(0o755)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"input folder {study} cannot be read (Permission denied)" in proc.stderr, proc.stderr[-3000:]
