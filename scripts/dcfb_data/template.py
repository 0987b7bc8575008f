"""The MNI152 2009 anatomy shipped inside the nilearn wheel, loaded once and resampled on demand.

Only the files inside the installed wheel are read: nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Spacing

MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

MNI_COPYRIGHT = """\
The simulated images are derived from the ICBM 2009a Nonlinear Symmetric template (MNI152 2009),
as shipped inside the nilearn package.

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References: VS Fonov, AC Evans, RC McKinstry, CR Almli, DL Collins, "Unbiased nonlinear average
age-appropriate brain templates from birth to adulthood", NeuroImage 47 (2009) S102.
VS Fonov et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54
(2011) 313-327.
"""

FULL_SHAPE = (197, 233, 189)


@dataclass(frozen=True)
class Template:
    """Template maps on one grid: ``t1`` in template units, ``gm`` / ``wm`` probabilities in [0, 1],
    all float32 arrays of one shape (X, Y, Z) in RAS voxel order, and the 4x4 RAS ``affine`` (mm)."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> float:
        return float(abs(self.affine[0, 0]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)


def mni_data_dir() -> str:
    """Folder of the MNI152 2009 files inside the installed nilearn package."""
    import nilearn.datasets

    folder = os.path.join(os.path.dirname(nilearn.datasets.__file__), "data")
    missing = [f for f in MNI_FILES.values() if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(
            f"MNI152 2009 files {missing} not found in {folder}: install the pinned nilearn "
            "(requirements.txt), whose wheel ships them."
        )
    return folder


@functools.lru_cache(maxsize=4)
def load_template(size: int | None = None) -> Template:
    """Load the MNI152 2009 T1, GM and WM maps.

    Args:
        size: ``None`` for the native 1 mm grid (197x233x189); otherwise the number of voxels along
            the longest axis of an isotropic grid covering the same field of view (e.g. 64 gives
            about 54x64x52 voxels of 3.64 mm), for fast tests.
    """
    folder = mni_data_dir()
    images = {k: nib.load(os.path.join(folder, f)) for k, f in MNI_FILES.items()}
    affine = images["t1"].affine.astype(np.float64)
    maps = {k: np.asarray(im.dataobj, dtype=np.float32) / 255.0 for k, im in images.items()}
    maps["t1"] *= 255.0  # keep the template's own intensity units for the T1
    if size is not None:
        if int(size) < 16:
            raise ValueError(f"size must be at least 16 voxels, got {size}")
        spacing = max(FULL_SHAPE) / float(size)
        resample = Spacing(pixdim=(spacing,) * 3, mode="bilinear", padding_mode="zeros")
        stacked = MetaTensor(np.stack([maps["t1"], maps["gm"], maps["wm"]]), affine=torch.as_tensor(affine))
        out = resample(stacked)
        arr = out.numpy().astype(np.float32)
        maps = {"t1": arr[0], "gm": arr[1], "wm": arr[2]}
        affine = np.asarray(out.affine, dtype=np.float64)
    return Template(t1=maps["t1"], gm=maps["gm"], wm=maps["wm"], affine=affine)
