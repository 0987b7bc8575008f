"""A 2D network run on every axial slice of a 3D volume, as one 3D module.

With it the 2D variant of the fusion network is trained and validated with exactly the 3D model's loss,
patches and inferer (``train_2d_3d_loss.json``): only the network differs, so a 2D-versus-3D comparison
measures the network, not the loss's 2D form. MONAI's ``SliceInferer`` does this at inference only; a
training-time module is written here because no MONAI network wraps another slice by slice.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SliceWiseNet"]


class SliceWiseNet(nn.Module):
    """Apply a 2D ``network`` to each slice of a 3D input along its last spatial axis (axial in RAS).

    The slices go through ``network`` as one batch of B * D images, so no slice sees its neighbours.

    Args:
        network: a 2D module, [N, C_in, H, W] -> [N, C_out, H, W].

    Shapes: ``x`` [B, C_in, H, W, D], optional ``pet_emphasis`` [B] -> [B, C_out, H, W, D].
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        if getattr(network, "spatial_dims", 2) != 2:
            raise ValueError(f"SliceWiseNet needs a 2D network, got spatial_dims={network.spatial_dims}")
        self.network = network

    def forward(self, x: torch.Tensor, pet_emphasis: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"SliceWiseNet expects [B, C, H, W, D], got shape {list(x.shape)}")
        b, c, h, w, d = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w)
        if pet_emphasis is None:
            out = self.network(slices)
        else:  # each volume's lambda for each of its slices
            out = self.network(slices, pet_emphasis.reshape(-1).expand(b).repeat_interleave(d))
        return out.reshape(b, d, out.shape[1], h, w).permute(0, 2, 3, 4, 1)
