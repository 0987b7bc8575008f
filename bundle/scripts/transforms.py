"""Input checks of the fusion pipeline, as MONAI transforms so that the configs can place them."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


def _source(data: Mapping, key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", {}) or {}
    return str(meta.get("filename_or_obj", key))


class CheckFusionInputd(MapTransform):
    """Refuse volumes that cannot be fused, naming the file: not 3D (after EnsureChannelFirstd, one
    channel and ``spatial_dims`` axes), NaN or infinite voxels, or empty (all zero).

    Raises:
        ValueError: with the file name and the problem.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            name = _source(d, key)
            if image.ndim != self.spatial_dims + 1 or image.shape[0] != 1:
                raise ValueError(
                    f"{name}: expected a single-channel {self.spatial_dims}D volume, "
                    f"got shape {tuple(image.shape)} (channel first)"
                )
            if min(image.shape[1:]) < 2:
                raise ValueError(
                    f"{name}: expected a {self.spatial_dims}D volume, got spatial shape " f"{tuple(image.shape[1:])}"
                )
            if not bool(torch.isfinite(image).all()):
                raise ValueError(f"{name}: contains NaN or infinite voxels")
            if not bool((image != 0).any()):
                raise ValueError(f"{name}: the volume is empty (all voxels are zero)")
        return d
