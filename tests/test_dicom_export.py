import json
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import dciodvfy_errors, read_series, run_script

from dcfb_data.dicom_study import oblique_grid, reorient, resample_onto


@pytest.mark.parametrize("which", ["tiny_study", "oblique_study"])
def test_every_file_passes_dciodvfy(which, request):
    study = request.getfixturevalue(which)
    files = [os.path.join(d, f) for d in ("MR", "PT") for f in sorted(os.listdir(os.path.join(study, d)))]
    assert len(files) > 20
    for path in files:
        assert dciodvfy_errors(os.path.join(study, path)) == [], path


def test_series_attributes(tiny_study):
    mr = pydicom.dcmread(os.path.join(tiny_study, "MR", "MR0001.dcm"))
    pt = pydicom.dcmread(os.path.join(tiny_study, "PT", "PT0001.dcm"))
    assert mr.SOPClassUID == pydicom.uid.MRImageStorage and mr.Modality == "MR"
    assert pt.SOPClassUID == pydicom.uid.PositronEmissionTomographyImageStorage and pt.Modality == "PT"
    assert mr.StudyInstanceUID == pt.StudyInstanceUID and mr.PatientID == pt.PatientID
    assert mr.SeriesInstanceUID != pt.SeriesInstanceUID
    assert mr.FrameOfReferenceUID == pt.FrameOfReferenceUID  # hybrid PET/MR
    assert mr.pixel_array.dtype == np.int16 and float(mr.RescaleSlope) > 0
    assert pt.Units == "BQML" and pt.DecayCorrection == "START" and "DECY" in pt.CorrectedImage
    nuclide = pt.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence[0]
    assert nuclide.CodeMeaning == "^18^Fluorine"
    assert [float(v) for v in pt.PixelSpacing] != [float(v) for v in mr.PixelSpacing]
    assert [float(v) for v in mr.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]


def test_axial_round_trip(tiny_cohort, tiny_study):
    for modality, name, per_slice in (("MR", "mri", False), ("PT", "pet", True)):
        nii = nib.load(os.path.join(tiny_cohort, "sub-0000", f"{name}.nii.gz"))
        expected, expected_affine = reorient(nii.get_fdata().astype(np.float32), nii.affine, "axial")
        data, affine = read_series(os.path.join(tiny_study, modality))
        assert data.shape == expected.shape
        np.testing.assert_allclose(affine, expected_affine, atol=1e-3)
        peaks = np.abs(expected).max(axis=(0, 1)) if per_slice else np.abs(expected).max()
        tolerance = peaks / 32767.0 * 0.51 + 1e-6
        assert np.all(np.abs(data - expected) <= tolerance)


def test_oblique_sagittal_round_trip_and_separate_frames(tiny_cohort, oblique_study):
    nii = nib.load(os.path.join(tiny_cohort, "sub-0001", "mri.nii.gz"))
    mri = nii.get_fdata().astype(np.float32)
    tilted = oblique_grid(mri.shape, nii.affine, 15.0)
    expected, expected_affine = reorient(resample_onto(mri, nii.affine, tilted, mri.shape), tilted, "sagittal")
    data, affine = read_series(os.path.join(oblique_study, "MR"))
    np.testing.assert_allclose(affine, expected_affine, atol=1e-3)
    assert np.abs(data - expected).max() <= np.abs(expected).max() / 32767.0 + 1e-4
    mr = pydicom.dcmread(os.path.join(oblique_study, "MR", "MR0001.dcm"))
    pt = pydicom.dcmread(os.path.join(oblique_study, "PT", "PT0001.dcm"))
    assert mr.FrameOfReferenceUID != pt.FrameOfReferenceUID
    assert mr.StudyInstanceUID == pt.StudyInstanceUID
    orientation = np.array([float(v) for v in mr.ImageOrientationPatient])
    assert abs(orientation[0]) < 1e-6 and 0.2 < abs(orientation[5]) < 0.99  # sagittal and tilted
    info = json.load(open(os.path.join(oblique_study, "export.json")))
    transform = np.array(info["pet_world_from_mr_world"])
    assert info["separate_frames"] and not np.allclose(transform, np.eye(4))


def test_export_refuses_bad_input(tiny_cohort, tmp_path):
    missing = run_script("export_dicom_study.py", "--subject_dir", str(tmp_path / "nope"), "--output_dir",
                         str(tmp_path / "out"), check=False)
    assert missing.returncode != 0 and "mri.nii.gz" in missing.stderr and not (tmp_path / "out").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(os.path.join(tiny_cohort, "sub-0000", "pet.nii.gz"), bad / "pet.nii.gz")
    nan = np.full((8, 8, 8), np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(bad / "mri.nii.gz"))
    proc = run_script("export_dicom_study.py", "--subject_dir", str(bad), "--output_dir", str(tmp_path / "out"),
                      check=False)
    assert proc.returncode != 0 and "NaN" in proc.stderr and str(bad / "mri.nii.gz") in proc.stderr
    plane = run_script("export_dicom_study.py", "--subject_dir", os.path.join(tiny_cohort, "sub-0000"),
                       "--output_dir", str(tmp_path / "out"), "--mr_plane", "diagonal", check=False)
    assert plane.returncode != 0 and "mr_plane" in plane.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".export-")]
