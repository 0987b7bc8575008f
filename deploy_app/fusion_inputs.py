"""What flows between the fusion operators after the DICOM series are read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AlignedPair:
    """The MR and PT volumes, both placed in the MR's patient coordinates.

    ``mri`` and ``pet`` are MONAI ``MetaTensor`` volumes without a channel, voxels indexed (column, row, slice)
    of their own series, each with an affine to RAS mm in the MR's Frame of Reference. The PET keeps its own
    grid: the bundle's preprocessing resamples it onto the MR (one definition of that step).
    ``mr_series`` / ``pt_series`` are the SDK ``DICOMSeries`` (instances sorted along the slice normal).
    ``mr_from_pt_world`` is the 4x4 LPS transform that the registration found (identity for a shared frame).
    """

    mri: object
    pet: object
    mr_series: object
    pt_series: object
    mr_from_pt_world: np.ndarray
    registration: dict = field(default_factory=dict)


@dataclass
class FusionResult:
    """The fused volume on the MR's grid, and what the writers need besides.

    ``fused`` and ``pet_on_mr``: float32 numpy arrays [D, H, W] (MR slice, row, column), in [0, 1], the PET
    resampled onto the MR grid for the colour overlay. ``preview``: dict of RAS-oriented [X, Y, Z] arrays
    ``mri``, ``pet``, ``fused`` (the network's input space) for pictures, and ``spacing`` (mm along X, Y, Z).
    """

    pair: AlignedPair
    fused: np.ndarray
    pet_on_mr: np.ndarray
    mr_affine_ras: np.ndarray
    preview: dict
    timings_s: dict = field(default_factory=dict)
