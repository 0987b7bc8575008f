"""What flows between the fusion operators after the DICOM series are read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AlignedPair:
    """The MR and PT volumes, both placed in the MR's patient coordinates.

    ``mri`` and ``pet`` are MONAI ``MetaTensor`` volumes without a channel, voxels indexed (column, row, slice)
    of their own series, each with an affine to RAS mm in the MR's Frame of Reference. The PET keeps its own
    grid: the bundle's preprocessing step resamples it onto the MR (one definition of that step, run once, in
    ``FusionInferenceOperator``).
    ``mr_series`` / ``pt_series`` are the SDK ``DICOMSeries`` (instances sorted along the slice normal).
    ``mr_from_pt_world`` is the 4x4 LPS transform that the registration found (identity for a shared frame).
    ``pet_units``: what the PET's values are in, and the SUVbw factor when the header allows (``PetUnits``).
    """

    mri: object
    pet: object
    mr_series: object
    pt_series: object
    mr_from_pt_world: np.ndarray
    registration: dict = field(default_factory=dict)
    pet_units: object = None


@dataclass
class FusionResult:
    """The fused volume on the MR's grid, and what the writers need besides.

    ``fused``: float32 numpy array [D, H, W] (MR slice, row, column) in [0, 1]. ``mr_affine_ras``: the MR's
    (column, row, slice) -> RAS mm affine. ``pet_on_mr``: the PET in its own unit on the MR's voxels, float32
    [D, H, W], as the network was given it (resampled once, by the bundle's preprocessing step).
    """

    pair: AlignedPair
    fused: np.ndarray
    mr_affine_ras: np.ndarray
    pet_on_mr: np.ndarray
    timings_s: dict = field(default_factory=dict)
