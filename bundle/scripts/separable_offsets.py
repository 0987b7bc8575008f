"""A ``DCFBNet`` checkpoint with full offset convolutions, converted to ``separable_offsets`` (a depthwise and a 1x1
convolution per attention): the starting point for a short distillation towards the original network.

    cd bundle && python -m scripts.separable_offsets --checkpoint models/model.pt --output runs/separable.pt

Each full kernel W [out, in, *k] is replaced by its best approximation of the form P[out, in] * D[in, *k] (the
leading singular pair of W[:, i, :] for every input channel i): the depthwise kernel D and the 1x1 weights P. That
is exact only for a kernel of rank one per input channel; trained kernels are not, so the converted network is
only close to the original, and training (``configs/train_distill.json`` with the original as teacher, the offsets
alone free) makes up the rest.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .anchor_decoders import _load

__all__ = ["factor_kernel", "convert"]


def factor_kernel(
    weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(depthwise weight [in, 1, *k], depthwise bias [in], 1x1 weight [out, in, 1...], 1x1 bias [out]) from a full
    convolution's ``weight`` [out, in, *k] and ``bias`` [out]."""
    out_channels, in_channels = weight.shape[:2]
    kernel = weight.shape[2:]
    flat = weight.detach().double().reshape(out_channels, in_channels, -1)
    depthwise = torch.zeros(in_channels, flat.shape[2], dtype=torch.float64)
    pointwise = torch.zeros(out_channels, in_channels, dtype=torch.float64)
    for i in range(in_channels):
        u, s, vh = torch.linalg.svd(flat[:, i, :], full_matrices=False)
        # the singular value split evenly, so that neither layer's weights start at another scale than the other's
        depthwise[i] = s[0].sqrt() * vh[0]
        pointwise[:, i] = s[0].sqrt() * u[:, 0]
    dtype = weight.dtype
    new_bias = torch.zeros(out_channels, dtype=dtype) if bias is None else bias.detach().clone()
    return (
        depthwise.reshape([in_channels, 1, *kernel]).to(dtype),
        torch.zeros(in_channels, dtype=dtype),
        pointwise.reshape([out_channels, in_channels] + [1] * len(kernel)).to(dtype),
        new_bias,
    )


def convert(checkpoint: str, output: str) -> list[str]:
    """Write ``output``: ``checkpoint``'s state dict with every ``*.offsets.weight`` / ``*.offsets.bias`` pair of a
    full convolution replaced by ``*.offsets.0.*`` (depthwise) and ``*.offsets.1.*`` (1x1). Returns the converted
    module names; refuses a checkpoint with none."""
    state = _load(checkpoint)
    names = sorted(k[: -len(".weight")] for k in state if k.endswith(".offsets.weight"))
    if not names:
        raise ValueError(f"{checkpoint}: no full offset convolutions (already separable, or no cross-attention)")
    for name in names:
        depthwise, depthwise_bias, pointwise, pointwise_bias = factor_kernel(
            state.pop(name + ".weight"), state.pop(name + ".bias", None)
        )
        state.update(
            {
                name + ".0.weight": depthwise,
                name + ".0.bias": depthwise_bias,
                name + ".1.weight": pointwise,
                name + ".1.bias": pointwise_bias,
            }
        )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save(state, output)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a DCFBNet checkpoint with full offset convolutions")
    parser.add_argument("--output", required=True, help="where to write the converted checkpoint")
    args = parser.parse_args(argv)
    try:
        names = convert(args.checkpoint, args.output)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.output}: {len(names)} offset convolutions made separable ({', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
