import json
import os

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from scripts.data import load_fusion_datalist
from scripts.transforms import CheckFusionInputd


def _load_and_check(path_mri, path_pet):
    return Compose([LoadImaged(keys=["mri", "pet"]), EnsureChannelFirstd(keys=["mri", "pet"]),
                    CheckFusionInputd(keys=["mri", "pet"])])({"mri": path_mri, "pet": path_pet})


def _chain(err: BaseException) -> str:
    """All messages of an exception chain: MONAI's Compose wraps a transform's error in a RuntimeError."""
    messages = []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(messages)


@pytest.fixture
def good_pet(tiny_cohort):
    return os.path.join(tiny_cohort, "sub-0000", "pet.nii.gz")


@pytest.mark.parametrize("volume, message", [
    (np.full((8, 8, 8), np.nan, np.float32), "NaN or infinite"),
    (np.full((8, 8, 8), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((8, 8, 8), np.float32), "empty"),
    (np.ones((8, 8), np.float32), "3D"),
    (np.ones((8, 8, 8, 3), np.float32), "single-channel"),
])
def test_bad_volumes_are_named(tmp_path, good_pet, volume, message):
    path = str(tmp_path / "bad_mri.nii.gz")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    with pytest.raises(Exception) as err:
        _load_and_check(path, good_pet)
    assert message in _chain(err.value) and "bad_mri.nii.gz" in _chain(err.value)


def test_unreadable_file(tmp_path, good_pet):
    path = tmp_path / "broken_mri.nii.gz"
    path.write_bytes(b"not a nifti file")
    with pytest.raises(Exception) as err:
        _load_and_check(str(path), good_pet)
    assert "broken_mri.nii.gz" in _chain(err.value)


def test_datalist_problems_are_named(tmp_path, tiny_cohort):
    with pytest.raises(FileNotFoundError, match="datalist not found"):
        load_fusion_datalist(str(tmp_path / "none.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_fusion_datalist(str(broken))
    no_split = tmp_path / "nosplit.json"
    no_split.write_text(json.dumps({"validation": []}))
    with pytest.raises(ValueError, match="no 'training' list"):
        load_fusion_datalist(str(no_split))
    missing_file = tmp_path / "missing.json"
    missing_file.write_text(json.dumps({"training": [{"mri": "a.nii.gz", "pet": "b.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="mri file not found"):
        load_fusion_datalist(str(missing_file))
    items = load_fusion_datalist(os.path.join(tiny_cohort, "datalist.json"), "validation")
    assert len(items) == 1 and os.path.isabs(items[0]["mri"])
