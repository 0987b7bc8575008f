"""Export one simulated subject (generate_cohort.py output) as a DICOM study with an MR and a PT series.

    python scripts/export_dicom_study.py --subject_dir data/cohort/sub-0000 --output_dir data/study
    python scripts/export_dicom_study.py ... --mr_plane sagittal --separate_frames

Writes ``OUTPUT/MR/*.dcm``, ``OUTPUT/PT/*.dcm`` and ``OUTPUT/export.json`` (the written geometry and,
for separate Frames of Reference, the rigid transform between the two patient coordinate systems).
The study is written to a temporary folder and moved into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import fire
import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dcfb_data.dicom_study import PLANE_AXCODES, export_study  # noqa: E402
from dcfb_data.template import MNI_COPYRIGHT  # noqa: E402


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"{path}: not a readable NIfTI image ({err})") from err
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains NaN or infinite voxels")
    return data, image.affine


def export(subject_dir: str, output_dir: str, mr_plane: str = "axial", mr_tilt_deg: float = 0.0,
           separate_frames: bool = False, patient_name: str | None = None, patient_id: str | None = None,
           overwrite: bool = False) -> str:
    """Export ``subject_dir`` (mri.nii.gz, pet.nii.gz) as a DICOM study in ``output_dir``."""
    if mr_plane not in PLANE_AXCODES:
        raise ValueError(f"mr_plane must be one of {sorted(PLANE_AXCODES)}, got {mr_plane!r}")
    mri, mri_affine = _load(os.path.join(subject_dir, "mri.nii.gz"))
    pet, pet_affine = _load(os.path.join(subject_dir, "pet.nii.gz"))
    if os.path.exists(output_dir) and os.listdir(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir}: exists and is not empty (use --overwrite)")
    sid = os.path.basename(os.path.normpath(subject_dir))
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        info = export_study(mri, mri_affine, pet, pet_affine, tmp,
                            patient_name=patient_name or f"DCFB^Simulated^{sid}", patient_id=patient_id or sid,
                            mr_plane=mr_plane, mr_tilt_deg=float(mr_tilt_deg), separate_frames=bool(separate_frames))
        info["subject_dir"] = os.path.abspath(subject_dir)
        with open(os.path.join(tmp, "export.json"), "w") as f:
            json.dump(info, f, indent=2)
        with open(os.path.join(tmp, "MNI_COPYRIGHT.txt"), "w") as f:
            f.write(MNI_COPYRIGHT)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {info['mr']['files']} MR and {info['pt']['files']} PT files -> {output_dir}")
    return output_dir


if __name__ == "__main__":
    try:
        fire.Fire(export)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
