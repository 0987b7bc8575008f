"""Writing a simulated cohort to disk: per-subject NIfTI files and record, and a MONAI datalist."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import nibabel as nib
import numpy as np

from .cohort import SimulatedSubject
from .template import MNI_COPYRIGHT

DATALIST_NAME = "datalist.json"


def subject_id(index: int) -> str:
    return f"sub-{index:04d}"


def write_subject(subject: SimulatedSubject, output_dir: str, sid: str) -> dict:
    """Write ``sid/{mri,pet,regions}.nii.gz`` and ``sid/simulation.json`` atomically (a temporary
    folder renamed when complete). Returns the datalist entry with paths relative to ``output_dir``."""
    final = os.path.join(output_dir, sid)
    tmp = tempfile.mkdtemp(prefix=f".{sid}-", dir=output_dir)
    try:
        nib.save(nib.Nifti1Image(subject.mri.astype(np.float32), subject.mri_affine), os.path.join(tmp, "mri.nii.gz"))
        nib.save(nib.Nifti1Image(subject.pet.astype(np.float32), subject.pet_affine), os.path.join(tmp, "pet.nii.gz"))
        nib.save(nib.Nifti1Image(subject.regions.astype(np.uint8), subject.mri_affine),
                 os.path.join(tmp, "regions.nii.gz"))
        with open(os.path.join(tmp, "simulation.json"), "w") as f:
            json.dump({"id": sid, **subject.record}, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"id": sid, "mri": f"{sid}/mri.nii.gz", "pet": f"{sid}/pet.nii.gz",
            "regions": f"{sid}/regions.nii.gz", "simulation": f"{sid}/simulation.json",
            "pattern": subject.record["pattern"]}


def split_entries(entries: list[dict], seed: int, val_fraction: float, test_fraction: float) -> dict:
    """Deterministic training / validation / testing split; each non-empty split gets at least one
    subject when there are three or more."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction and test_fraction must be >= 0 and sum below 1, got "
                         f"{val_fraction} and {test_fraction}")
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 7919])).permutation(len(entries))
    n = len(entries)
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    if n >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    shuffled = [entries[i] for i in order]
    return {
        "testing": sorted(shuffled[:n_test], key=lambda e: e["id"]),
        "validation": sorted(shuffled[n_test:n_test + n_val], key=lambda e: e["id"]),
        "training": sorted(shuffled[n_test + n_val:], key=lambda e: e["id"]),
    }


def write_datalist(output_dir: str, splits: dict, description: dict) -> str:
    path = os.path.join(output_dir, DATALIST_NAME)
    with open(path, "w") as f:
        json.dump({**description, **splits}, f, indent=2)
    with open(os.path.join(output_dir, "MNI_COPYRIGHT.txt"), "w") as f:
        f.write(MNI_COPYRIGHT)
    return path
