import json
import os

import nibabel as nib
import numpy as np
import pytest
from conftest import TINY_SIZE, run_script

from dcfb_data.cohort import AD_REGIONS, simulate_subject
from dcfb_data.dicom_study import resample_onto
from dcfb_data.template import FULL_SHAPE, load_template


@pytest.fixture(scope="module")
def template():
    return load_template(TINY_SIZE)


def test_template_full_grid_is_mni_1mm():
    full = load_template(None)
    assert full.shape == FULL_SHAPE
    assert np.allclose(np.diag(full.affine)[:3], 1.0)
    assert 0.0 <= full.gm.min() and full.gm.max() <= 1.0


def test_same_seed_same_subject_other_index_differs(template):
    a = simulate_subject(template, 5, 2)
    b = simulate_subject(template, 5, 2)
    c = simulate_subject(template, 5, 3)
    np.testing.assert_array_equal(a.mri, b.mri)
    np.testing.assert_array_equal(a.pet, b.pet)
    assert a.record == b.record
    assert not np.array_equal(a.mri, c.mri)


def test_mri_is_float32_on_template_grid_with_noise(template):
    s = simulate_subject(template, 1, 0)
    assert s.mri.dtype == np.float32 and s.mri.shape == template.shape
    np.testing.assert_allclose(s.mri_affine, template.affine)
    background = s.mri[template.t1 == 0]
    assert background.size and background.std() > 0  # Rician noise floor outside the head
    assert np.all(background >= 0)


def _pet_on_mri_grid(s):
    return resample_onto(s.pet, s.pet_affine, s.mri_affine, s.mri.shape)


def test_pet_follows_anatomy_and_has_its_own_grid():
    # 64 voxels rather than the tiny grid: at 5 mm voxels partial volume hides the contrast.
    template = load_template(64)
    s = simulate_subject(template, 1, 1, pattern="normal")
    pet_spacing = np.abs(np.diag(s.pet_affine)[:3])
    assert np.all(pet_spacing > template.spacing) and s.pet.shape != s.mri.shape
    pet = _pet_on_mri_grid(s)
    gm_mean = pet[template.gm > 0.7].mean()
    wm_mean = pet[template.wm > 0.9].mean()
    assert gm_mean / wm_mean > 1.3, (gm_mean, wm_mean)  # 4:1 in tissue, less after 6-8 mm blur
    assert 5_000 < np.percentile(pet[template.gm > 0.7], 90) < 60_000  # plausible Bq/ml
    assert s.record["pet"]["units"] == "BQML"
    # registered in world space: the PET's centre of activity lies within a voxel or two of the brain's
    idx = np.indices(pet.shape).reshape(3, -1)
    world = s.mri_affine[:3, :3] @ idx + s.mri_affine[:3, 3:4]
    brain = (template.gm + template.wm).ravel()
    com_pet = (world * pet.ravel()).sum(1) / pet.sum()
    com_brain = (world * brain).sum(1) / brain.sum()
    assert np.linalg.norm(com_pet - com_brain) < 2 * template.spacing + 6


def _target_over_reference(s, pet):
    target = np.isin(s.regions, [r["label"] for r in s.record["regions"] if r["role"] == "alzheimer_target"])
    reference = np.isin(s.regions, [r["label"] for r in s.record["regions"] if r["role"] == "reference"])
    return pet[target].mean() / pet[reference].mean()


def test_alzheimer_pattern_lowers_target_regions(template):
    full = load_template(64)
    normal = simulate_subject(full, 2, 0, pattern="normal")
    ad = simulate_subject(full, 2, 0, pattern="alzheimer")
    assert all(r["reduction"] == 0 for r in normal.record["regions"])
    reductions = [r["reduction"] for r in ad.record["regions"] if r["role"] == "alzheimer_target"]
    assert len(reductions) == len(AD_REGIONS) and all(0.15 <= x <= 0.35 for x in reductions)
    assert _target_over_reference(ad, _pet_on_mri_grid(ad)) < 0.95 * _target_over_reference(normal, _pet_on_mri_grid(normal))


def test_bad_pattern_is_refused(template):
    with pytest.raises(ValueError, match="pattern"):
        simulate_subject(template, 0, 0, pattern="tumour")


def test_generator_writes_cohort_and_datalist(tiny_cohort):
    datalist = json.load(open(os.path.join(tiny_cohort, "datalist.json")))
    splits = {k: datalist[k] for k in ("training", "validation", "testing")}
    assert [len(v) for v in splits.values()] == [4, 1, 1]
    ids = [e["id"] for v in splits.values() for e in v]
    assert len(set(ids)) == 6
    entry = splits["training"][0]
    mri = nib.load(os.path.join(tiny_cohort, entry["mri"]))
    pet = nib.load(os.path.join(tiny_cohort, entry["pet"]))
    assert mri.get_data_dtype() == np.float32 and pet.get_data_dtype() == np.float32
    assert mri.shape != pet.shape
    record = json.load(open(os.path.join(tiny_cohort, entry["simulation"])))
    assert record["id"] == entry["id"] and record["pattern"] in ("normal", "alzheimer")
    assert {"regions", "lesions", "mri", "pet"} <= set(record)
    assert "McGill" in open(os.path.join(tiny_cohort, "MNI_COPYRIGHT.txt")).read()


def test_generator_is_deterministic(tiny_cohort, tmp_path):
    run_script("generate_cohort.py", "--output_dir", str(tmp_path), "--n_subjects", "2", "--size", str(TINY_SIZE),
               "--seed", "11", "--workers", "1")
    for name in ("mri.nii.gz", "pet.nii.gz", "regions.nii.gz"):
        a = nib.load(os.path.join(tiny_cohort, "sub-0001", name)).get_fdata()
        b = nib.load(os.path.join(tmp_path, "sub-0001", name)).get_fdata()
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args, message", [
    (["--n_subjects", "0"], "n_subjects"),
    (["--size", "5"], "size"),
    (["--fraction_alzheimer", "2"], "fraction_alzheimer"),
    (["--val_fraction", "0.6", "--test_fraction", "0.6"], "fraction"),
])
def test_generator_bad_arguments(tmp_path, args, message):
    proc = run_script("generate_cohort.py", "--output_dir", str(tmp_path / "c"), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "c" / "datalist.json").exists()


def test_heldout_family_draws_outside_the_training_ranges_and_leaves_the_standard_family_alone(template):
    from dcfb_data.cohort import FAMILIES

    standard = simulate_subject(template, 5, 2)
    again = simulate_subject(template, 5, 2, family="standard")
    heldout = simulate_subject(template, 5, 2, family="heldout")
    np.testing.assert_array_equal(standard.mri, again.mri)
    assert standard.record["family"] == "standard" and heldout.record["family"] == "heldout"
    train, test = FAMILIES["standard"], FAMILIES["heldout"]
    assert test.deformation_mm[0] >= train.deformation_mm[1] and test.pet_fwhm_mm[0] > train.pet_fwhm_mm[1]
    assert train.deformation_mm[0] <= standard.record["mri"]["deformation_max_mm"] <= train.deformation_mm[1]
    assert test.deformation_mm[0] <= heldout.record["mri"]["deformation_max_mm"] <= test.deformation_mm[1]
    assert test.pet_fwhm_mm[0] <= heldout.record["pet"]["fwhm_mm"] <= test.pet_fwhm_mm[1]
    assert heldout.record["mri"]["head_scale"] != 1.0 and heldout.record["mri"]["t1_gamma"] != 1.0
    assert not np.array_equal(standard.mri, heldout.mri)
    with pytest.raises(ValueError, match="family"):
        simulate_subject(template, 5, 2, family="other")
