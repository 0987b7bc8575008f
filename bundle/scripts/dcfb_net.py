"""DCFB fusion network: two encoders, Deformable Cross Feature Blend blocks, a decoder of blend weights.

After Liu et al., "Three-Dimensional Medical Image Fusion with Deformable Cross-Attention" (ICONIP 2023),
with the flaws of its public code avoided: the attention weights are a softmax over the sampled points,
offsets are free to reach several voxels, and tensors are permuted, never reshaped across axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Norm

__all__ = [
    "ChannelNorm",
    "DeformableCrossAttention",
    "CrossFeatureBlend",
    "EmphasisFiLM",
    "FusionDecoder",
    "anchor_weights",
    "DCFBNet",
    "on_device",
]


class ChannelNorm(nn.Module):
    """Layer normalisation over the channels of each voxel, with a per-channel scale and shift.

    Its statistics do not depend on the field of view: a voxel is normalised the same way on a training patch, a
    sliding window or the whole volume (instance and group normalisation use the statistics of whatever they are
    given, so a network trained on patches sees other statistics on a whole volume); only the context that the
    convolutions see changes with the field of view. MONAI's norm factory has no per-voxel channel normalisation; it is registered
    there as ``"CHANNEL"``.

    Shapes: [B, C, *S] -> [B, C, *S].
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


if "CHANNEL" not in Norm.names:
    Norm.add_factory_callable("CHANNEL", lambda spatial_dims: ChannelNorm)


# in place: the convolution's output is not kept for anything else, and a whole head's feature maps are 60-200 MB
# each (a fresh one costs its page faults; see the Deploy app's memory_reuse)
LEAKY_RELU = ("LEAKYRELU", {"inplace": True})


def _reference_grid(shape: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalised (align_corners=False) coordinates of the voxel centres, last axis in grid_sample's
    (x, y[, z]) order, i.e. the reverse of the spatial axes: shape (*spatial, spatial_dims)."""
    axes = [(torch.arange(s, device=device, dtype=dtype) * 2.0 + 1.0) / s - 1.0 for s in shape]
    mesh = torch.meshgrid(axes, indexing="ij")
    return torch.stack(mesh[::-1], dim=-1)


class DeformableCrossAttention(nn.Module):
    """Features of one modality (the query) attend to another's (the context) at K learned offsets.

    For every voxel and head, K points are sampled from the context's values with ``grid_sample`` at
    the voxel plus learned offsets (in voxels, ``max_offset * tanh``, zero at initialisation), and
    averaged with softmax weights over the K points predicted from the query. The cost is linear in
    the number of voxels (K samples per voxel), unlike windowed dot-product attention.

    Args:
        spatial_dims: 2 or 3.
        channels: C, divisible by ``num_heads``.
        num_heads: heads h.
        num_points: sampled points K per head.
        max_offset: largest offset along each axis, in voxels of this feature map.
        separable_offsets: predict the offsets from the concatenated query and context with a depthwise 3x3(x3)
            convolution followed by a 1x1 one (``offsets`` is then a two-layer ``nn.Sequential``) instead of one full
            3x3(x3) convolution: the same receptive field at a seventeenth of the arithmetic (2C * 75 multiply-adds per
            voxel in 3D against 2C * 1296). Why: the full convolution was the network's largest single cost (a quarter
            of a forward's GFLOP).

    Shapes: ``query``, ``context`` [B, C, *S] -> [B, C, *S].
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_heads: int = 4,
        num_points: int = 4,
        max_offset: float = 4.0,
        separable_offsets: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if channels % num_heads != 0:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.num_heads = num_heads
        self.num_points = num_points
        self.max_offset = float(max_offset)
        self.value = conv(channels, channels, kernel_size=1)
        out_offsets = num_heads * num_points * spatial_dims
        if separable_offsets:
            self.offsets = nn.Sequential(
                conv(2 * channels, 2 * channels, kernel_size=3, padding=1, groups=2 * channels),
                conv(2 * channels, out_offsets, kernel_size=1),
            )
        else:
            self.offsets = conv(2 * channels, out_offsets, kernel_size=3, padding=1)
        self.weights = conv(channels, num_heads * num_points, kernel_size=1)
        self.project = conv(channels, channels, kernel_size=1)
        last = self.offsets[-1] if separable_offsets else self.offsets
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def sampling_offsets(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Offsets in voxels: [B, heads, points, spatial_dims (in the order of the spatial axes), *S]."""
        raw = self.offsets(torch.cat([query, context], dim=1))
        b = raw.shape[0]
        spatial = raw.shape[2:]
        raw = raw.reshape([b, self.num_heads, self.num_points, self.spatial_dims] + list(spatial))
        return self.max_offset * torch.tanh(raw)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c = query.shape[0], query.shape[1]
        spatial = list(query.shape[2:])
        h, k, d = self.num_heads, self.num_points, self.spatial_dims
        offsets = self.sampling_offsets(query, context)  # [B, h, K, d, *S], voxels
        # voxels -> normalised units, axis order reversed to grid_sample's (x, y[, z])
        scale = torch.tensor([2.0 / s for s in spatial], device=query.device, dtype=query.dtype)
        offsets = offsets * scale.view([1, 1, 1, d] + [1] * d)
        offsets = torch.flip(offsets, dims=[3])
        perm = [0, 1, 2] + [4 + i for i in range(d)] + [3]
        offsets = offsets.permute(perm)  # [B, h, K, *S, d]
        grid = _reference_grid(spatial, query.device, query.dtype) + offsets
        # K sampling grids stacked along the first spatial axis: one grid_sample call for all points
        grid = grid.reshape([b * h, k * spatial[0]] + spatial[1:] + [d])
        # contiguous: from channels-last features this split into heads is neither layout, and grid_sample's CPU kernel
        # runs twice as slowly on it (measured: 193 against 108 ms at a head's 1/4 level)
        value = self.value(context).reshape([b * h, c // h] + spatial).contiguous()
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.reshape([b * h, c // h, k] + spatial)
        attention = torch.softmax(self.weights(query).reshape([b * h, 1, k] + spatial), dim=2)
        attended = (sampled * attention).sum(dim=2).reshape([b, c] + spatial)
        return self.project(attended)


class CrossFeatureBlend(nn.Module):
    """DCFB block: bidirectional deformable cross-attention, then a gated blend of the two streams.

    Each stream is updated residually with what it gathers from the other; the blend keeps what the
    two share (a gated mix, gate in (0, 1) per voxel and channel) and what differs (|a - b|).

    Shapes: ``mri``, ``pet`` [B, C, *S] -> (blended [B, C, *S], mri' [B, C, *S], pet' [B, C, *S]).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_heads: int = 4,
        num_points: int = 4,
        max_offset: float = 4.0,
        cross_attention: bool = True,
        norm: str = "INSTANCE",
        separable_offsets: bool = False,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        # (MRI attends to PET, PET attends to MRI), or nothing: no unused parameters (DDP refuses them)
        self.cross = nn.ModuleList(
            [
                DeformableCrossAttention(spatial_dims, channels, num_heads, num_points, max_offset, separable_offsets)
                for _ in range(2)
            ]
            if cross_attention
            else []
        )
        self.gate = conv(2 * channels, channels, kernel_size=1)
        self.merge = Convolution(spatial_dims, 2 * channels, channels, kernel_size=1, act=LEAKY_RELU, norm=norm)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        updates: list[torch.Tensor] = []
        for i, attention in enumerate(self.cross):
            updates.append(attention(mri, pet) if i == 0 else attention(pet, mri))
        if len(updates) == 2:
            mri, pet = mri + updates[0], pet + updates[1]
        gate = torch.sigmoid(self.gate(torch.cat([mri, pet], dim=1)))
        difference = mri - pet
        shared = torch.addcmul(pet, gate, difference)  # gate * mri + (1 - gate) * pet
        difference = torch.abs(difference) if self.training else difference.abs_()
        blended = self.merge(torch.cat([shared, difference], dim=1))
        return blended, mri, pet


class _Encoder(nn.Module):
    """One modality: a strided stem, then a strided conv and a conv per level. [B,1,*S] -> list of
    [B, f_i, *S / 2**(i+1)] for i in 0..len(features)-1."""

    def __init__(self, spatial_dims: int, features: Sequence[int], norm: str = "INSTANCE") -> None:
        super().__init__()
        levels = []
        in_ch = 1
        for f in features:
            levels.append(
                nn.Sequential(
                    Convolution(spatial_dims, in_ch, f, strides=2, kernel_size=3, act=LEAKY_RELU, norm=norm),
                    Convolution(spatial_dims, f, f, kernel_size=3, act=LEAKY_RELU, norm=norm),
                )
            )
            in_ch = f
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class EmphasisFiLM(nn.Module):
    """Feature-wise linear modulation by the PET emphasis: ``x * (1 + gamma(lambda)) + beta(lambda)``.

    A two-layer perceptron maps lambda to per-channel (gamma, beta); its last layer starts at zero, so an
    untrained FiLM is the identity.

    Shapes: ``x`` [B, C, *S], ``emphasis`` [B] -> [B, C, *S].
    """

    def __init__(self, channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def coefficients(self, emphasis: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale ``1 + gamma``, shift ``beta``), each [B, C]."""
        gamma, beta = torch.chunk(self.mlp(emphasis.reshape(-1, 1).to(dtype)), 2, dim=1)
        return 1.0 + gamma, beta

    def forward(self, x: torch.Tensor, emphasis: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``inplace``: modulate ``x`` itself (at inference, for a tensor nothing else uses)."""
        scale, shift = self.coefficients(emphasis, x.dtype)
        shape = [x.shape[0], x.shape[1]] + [1] * (x.ndim - 2)
        if inplace:
            return x.mul_(scale.reshape(shape)).add_(shift.reshape(shape))
        return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))


class FusionDecoder(nn.Module):
    """The decoder side of ``DCFBNet``: from the blended features of every level to the fused image, modulated by
    the PET emphasis (FiLM) at every level.

    A decoder with skips; the head predicts, at half resolution, a gain for the MRI, a gain for the PET and an
    offset; upsampled, they give ``base = g_mri * MRI + g_pet * PET + offset`` on the full-resolution inputs, so a
    smooth PET level can be added to the MRI's full-contrast detail (a convex mix of the sources cannot do that).
    A small full-resolution detail path (two convolutions on MRI, PET and base) adds a residual; the output is
    clipped to [0, 1].

    Args:
        spatial_dims: 2 or 3.
        features: channels per level, as for the encoders.
        detail_channels: channels of the full-resolution detail path (at least 1).
        norm: the feature normalisation (a MONAI norm name or None).

    Shapes: ``blended`` one [B, features[i], *S / 2 ** (i + 1)] per level, ``mri`` and ``pet`` [B, 1, *S],
    ``emphasis`` [B] -> [B, 1, *S] in [0, 1].
    """

    def __init__(
        self, spatial_dims: int, features: Sequence[int], detail_channels: int = 8, norm: str | None = None
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.deepest_film = EmphasisFiLM(features[-1])
        # deepest first, so that forward() can enumerate them (TorchScript indexes ModuleLists by literals)
        self.decoders = nn.ModuleList(
            [
                Convolution(
                    spatial_dims, features[i + 1] + features[i], features[i], kernel_size=3, act=LEAKY_RELU, norm=norm
                )
                for i in range(len(features) - 2, -1, -1)
            ]
        )
        self.decoder_films = nn.ModuleList([EmphasisFiLM(features[i]) for i in range(len(features) - 2, -1, -1)])
        # (MRI gain, PET gain, offset), starting near the average of the sources: small weights, not zero
        # ones, so that the gradient reaches the decoder and the attention from the first step
        self.head = conv(features[0], 3, kernel_size=3, padding=1)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(torch.tensor([0.5, 0.5, 0.0]))
        # full resolution, few channels: the only convolutions that see the inputs' finest detail
        self.detail_in = conv(3, detail_channels, kernel_size=3, padding=1)
        self.detail_film = EmphasisFiLM(detail_channels)
        self.detail_out = conv(detail_channels, 1, kernel_size=3, padding=1)
        nn.init.zeros_(self.detail_out.weight)
        nn.init.zeros_(self.detail_out.bias)
        self.detail_slab_voxels = 2**21  # voxels per step of the detail path at inference (see forward)
        self.upsample_mode = "trilinear" if spatial_dims == 3 else "bilinear"

    def forward(
        self, blended: list[torch.Tensor], mri: torch.Tensor, pet: torch.Tensor, emphasis: torch.Tensor
    ) -> torch.Tensor:
        x = self.deepest_film(blended[-1], emphasis)
        for j, (decoder, film) in enumerate(zip(self.decoders, self.decoder_films)):
            skip = blended[len(blended) - 2 - j]
            x = F.interpolate(x, size=skip.shape[2:], mode=self.upsample_mode, align_corners=False)
            x = film(decoder(torch.cat([x, skip], dim=1)), emphasis, inplace=not self.training)
        coefficients = F.interpolate(self.head(x), size=mri.shape[2:], mode=self.upsample_mode, align_corners=False)
        # g_mri * MRI + g_pet * PET + offset
        base = torch.addcmul(coefficients[:, 2:3], coefficients[:, 0:1], mri)
        base = torch.addcmul(base, coefficients[:, 1:2], pet)
        sources = torch.cat([mri, pet, base], dim=1)
        depth = mri.shape[2]
        row = 1
        for size in mri.shape[3:]:
            row *= size
        if self.training:
            return torch.clamp(base + self._detail(sources, emphasis), 0.0, 1.0)
        if depth * row <= self.detail_slab_voxels:
            return base.add_(self._detail(sources, emphasis)).clamp_(0.0, 1.0)
        # at inference, the full-resolution detail path (8 channels: most of a whole volume's memory) runs over
        # slabs of the first spatial axis (contiguous in either memory layout) of about detail_slab_voxels each, with
        # the 2 voxels of context its two 3x3 convolutions reach: the same output with a fraction of the memory, added
        # into ``base`` in place (``sources`` holds its own copy). Slabs of equal thickness and not thin: PyTorch sends
        # a batch-1 3D convolution with N*C*D*H <= 20480 to its slow reference kernel (measured: 87 against 9 ms).
        count = (depth * row + self.detail_slab_voxels - 1) // self.detail_slab_voxels
        thickness = (depth + count - 1) // count
        for start in range(0, depth, thickness):
            stop = min(start + thickness, depth)
            low, high = max(start - 2, 0), min(stop + 2, depth)
            detail = self._detail(sources[:, :, low:high], emphasis)
            base[:, :, start:stop] += detail[:, :, start - low : stop - low]
        return base.clamp_(0.0, 1.0)

    def _detail(self, sources: torch.Tensor, emphasis: torch.Tensor) -> torch.Tensor:
        """The full-resolution detail path: [B, 3, *S] (MRI, PET, base) -> residual [B, 1, *S]."""
        if self.training or sources.shape[0] != 1:
            hidden = F.leaky_relu(self.detail_film(self.detail_in(sources), emphasis), 0.01)
        else:
            # one lambda: its FiLM folded into the convolution's weights, two passes over the full-resolution
            # hidden features fewer
            scale, shift = self.detail_film.coefficients(emphasis, sources.dtype)
            weight_shape = [-1] + [1] * (self.detail_in.weight.ndim - 1)
            weight = self.detail_in.weight * scale.reshape(weight_shape)
            bias = self.detail_in.bias
            bias = shift.reshape(-1) if bias is None else torch.addcmul(shift.reshape(-1), bias, scale.reshape(-1))
            hidden = F.leaky_relu(self.detail_in._conv_forward(sources, weight, bias), 0.01, inplace=True)
        return self.detail_out(hidden)


def anchor_weights(
    emphasis: torch.Tensor, knots: list[float], knot_decoder: list[int], num_decoders: int
) -> torch.Tensor:
    """Piecewise-linear ("hat") weights of the decoders at each lambda: [B] -> [B, num_decoders].

    ``knots`` ascend from 0 to 1; decoder ``knot_decoder[k]`` owns knot ``k``. Between two knots the weights of
    their decoders go linearly from one to the other; at a knot, its decoder alone has weight 1. A decoder that owns
    several knots sums their weights.
    """
    weights = torch.zeros(emphasis.shape[0], num_decoders, dtype=emphasis.dtype, device=emphasis.device)
    for k in range(len(knots) - 1):
        low, high = knots[k], knots[k + 1]
        inside = (emphasis >= low) & (emphasis <= high)
        if k > 0:
            inside = inside & (emphasis > low)  # a lambda on a knot belongs to the segment that ends there
        # on the upper knot exactly 1, not (high - low) / (high - low) in float32, which can miss 1 by a rounding
        # and wake the other decoder for nothing
        t = torch.where(emphasis >= high, torch.ones_like(emphasis), (emphasis - low) / (high - low))
        t = torch.where(inside, t, torch.zeros_like(emphasis))
        weights[:, knot_decoder[k]] += torch.where(inside, 1.0 - t, torch.zeros_like(t))
        weights[:, knot_decoder[k + 1]] += t
    return weights


# the decoder side's parts, at the top of DCFBNet before its decoder was a module of its own (bundle 0.6.0 and older)
LEGACY_DECODER_PARTS = (
    "deepest_film.",
    "decoders.",
    "decoder_films.",
    "head.",
    "detail_in.",
    "detail_film.",
    "detail_out.",
)


def _legacy_decoder_names(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: a checkpoint of bundle 0.6.0 or older names the decoder's weights at the top level;
    they are the conditioned decoder's (``decoder.``), so that older checkpoints and fine-tunes still load."""
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix) :].startswith(LEGACY_DECODER_PARTS)]:
        state_dict[prefix + "decoder." + key[len(prefix) :]] = state_dict.pop(key)


class DCFBNet(nn.Module):
    """Unsupervised MRI-PET fusion network, conditioned on a PET emphasis lambda in [0, 1].

    Two encoders (or one shared) at 1/2, 1/4, 1/8 (...) resolution; DCFB blocks on the coarser levels
    (``attention_levels``), a gated blend on the others; a ``FusionDecoder`` (decoder with skips, FiLM by lambda at
    every level, a head of source gains and offset, a full-resolution detail path).

    With ``anchor_pet_emphasis`` (e.g. ``(0.3, 0.5, 0.7)``) the decoder side itself depends on lambda: one decoder
    per anchor, trained at that lambda, beside the lambda-conditioned ``decoder``, which owns lambda 0 and 1. The
    output is the piecewise-linear interpolation over lambda of the decoders' outputs (``anchor_weights``): at an
    anchor, that anchor's decoder alone (one decoder pass); between two, a blend of the two (each decoder is given
    the lambda asked for: its FiLM layers still see it). Why: a FiLM-conditioned
    decoder, even distilled from networks trained at fixed lambdas, stays below them, while decoders trained at one
    lambda each on a shared encoder reach them (``docs/report.md``, version 0.6.0).

    Args:
        spatial_dims: 2 or 3.
        features: channels per level, e.g. (16, 32, 64); the input's spatial sizes must be divisible
            by 2 ** len(features).
        num_heads, num_points, max_offset: of the deformable cross-attention.
        attention_levels: indices of the levels with DCFB blocks (default: all but the first).
        shared_encoder: one encoder for both modalities (ablation).
        cross_attention: False keeps the blend but drops the attention (ablation).
        detail_channels: channels of the full-resolution detail path (at least 1).
        norm: the feature normalisation, a MONAI norm name: ``"INSTANCE"`` (statistics of the input it is given),
            ``"CHANNEL"`` (``ChannelNorm``, per voxel: the same statistics on a patch and on the whole volume) or
            ``"NONE"`` (no normalisation: the inputs are already scaled per volume, so the output at a voxel does not
            depend on the window around it beyond the receptive field).
        pet_emphasis: the lambda used when ``forward`` is not given one (0 favours the MRI, 1 the PET);
            a buffer, so it can be changed on a loaded TorchScript model
            (``model.pet_emphasis.fill_(0.7)``), and not part of the checkpoint.
        anchor_pet_emphasis: lambdas strictly inside (0, 1), ascending, each with a decoder of its own (default:
            none, the conditioned decoder alone).
        separable_offsets: the attention's offsets from a depthwise and a 1x1 convolution instead of one full
            convolution (``DeformableCrossAttention``); ``scripts/separable_offsets.py`` converts a checkpoint.

    Shapes: ``image`` [B, 2, *S] (channel 0 MRI, 1 PET, each in [0, 1]), optional ``pet_emphasis`` [B]
    -> ``pred`` [B, 1, *S] in [0, 1].
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        features: Sequence[int] = (16, 32, 64),
        num_heads: int = 4,
        num_points: int = 4,
        max_offset: float = 4.0,
        attention_levels: Sequence[int] | None = None,
        shared_encoder: bool = False,
        cross_attention: bool = True,
        detail_channels: int = 8,
        pet_emphasis: float = 0.5,
        norm: str | None = "INSTANCE",
        anchor_pet_emphasis: Sequence[float] = (),
        separable_offsets: bool = False,
    ) -> None:
        super().__init__()
        flags = (
            ("shared_encoder", shared_encoder),
            ("cross_attention", cross_attention),
            ("separable_offsets", separable_offsets),
        )
        for name, flag in flags:
            # a command-line override such as `--network_def#cross_attention false` arrives as the string
            # 'false', which is truthy: refuse it rather than train the wrong network
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool (True or False on the command line), got {flag!r}")
        if int(detail_channels) < 1:
            raise ValueError(f"detail_channels must be at least 1, got {detail_channels!r}")
        if not 0.0 <= float(pet_emphasis) <= 1.0:
            raise ValueError(f"pet_emphasis must be in [0, 1], got {pet_emphasis!r}")
        anchors = [float(a) for a in anchor_pet_emphasis]
        if any(not 0.0 < a < 1.0 for a in anchors) or anchors != sorted(set(anchors)):
            raise ValueError(f"anchor_pet_emphasis must ascend strictly inside (0, 1), got {anchor_pet_emphasis!r}")
        # MONAI's Convolution takes None for "no normalisation"; a config or command line can only say "NONE"
        norm = None if norm is None or str(norm).upper() == "NONE" else norm
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ValueError(f"features needs at least two levels, got {features}")
        if attention_levels is None:
            attention_levels = tuple(range(1, len(features)))
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** len(features)
        self.register_buffer("pet_emphasis", torch.tensor(float(pet_emphasis)), persistent=False)
        self.mri_encoder = _Encoder(spatial_dims, features, norm)
        self.pet_encoder = self.mri_encoder if shared_encoder else _Encoder(spatial_dims, features, norm)
        # see _encode; with a normalisation the blocks' ADN layers hold per-channel parameters of one encoder each
        self.pair_encoders = spatial_dims == 3 and not shared_encoder and norm is None
        self.blends = nn.ModuleList(
            [
                CrossFeatureBlend(
                    spatial_dims,
                    f,
                    num_heads,
                    num_points,
                    max_offset,
                    cross_attention=cross_attention and (i in attention_levels),
                    norm=norm,
                    separable_offsets=separable_offsets,
                )
                for i, f in enumerate(features)
            ]
        )
        self.decoder = FusionDecoder(spatial_dims, features, detail_channels, norm)
        self.anchor_decoders = nn.ModuleList(
            [FusionDecoder(spatial_dims, features, detail_channels, norm) for _ in anchors]
        )
        # the knots of the interpolation over lambda: 0 and 1 belong to the conditioned decoder (index 0)
        self.anchor_pet_emphasis = anchors
        self.knots = [0.0] + anchors + [1.0]
        self.knot_decoder = [0] + list(range(1, len(anchors) + 1)) + [0]
        self.register_load_state_dict_pre_hook(_legacy_decoder_names)

    def _encode(self, mri: torch.Tensor, pet: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both encoders' features, level by level: ([B, f_i, *S_i] per level for the MRI, the same for the PET).

        At inference on one volume on a CPU, a convolution that PyTorch would send to its slow reference kernel (batch
        1 and N*C*D*H <= 20480; for a 128^3 input the first convolutions, 1 channel at 128x128, and the deepest, 64
        channels at 16x16) runs for both encoders at once as one grouped convolution, which PyTorch gives to oneDNN:
        the same arithmetic (measured at 128^3: 14.7 against 1.8 ms for the first pair, 17.3 against 3.3 ms for the
        deepest). Elsewhere one grouped convolution was slower than the two plain ones, so the encoders run apart
        there."""
        if self.training or not self.pair_encoders or mri.shape[0] != 1 or mri.device.type != "cpu":
            return self.mri_encoder(mri), self.pet_encoder(pet)
        mri_feats: list[torch.Tensor] = []
        pet_feats: list[torch.Tensor] = []
        for mri_level, pet_level in zip(self.mri_encoder.levels, self.pet_encoder.levels):
            for j, (mri_block, pet_block) in enumerate(zip(mri_level, pet_level)):
                if mri.shape[1] * mri.shape[2] * mri.shape[3] > 20480:
                    mri, pet = mri_block(mri), pet_block(pet)
                else:
                    conv, other = mri_block.conv, pet_block.conv
                    weight = torch.cat([conv.weight, other.weight], dim=0)
                    bias, other_bias = conv.bias, other.bias
                    both_bias: torch.Tensor | None = None
                    if bias is not None and other_bias is not None:
                        both_bias = torch.cat([bias, other_bias], dim=0)
                    both = torch.cat([mri, pet], dim=1)
                    if conv.weight.is_contiguous(memory_format=torch.channels_last_3d):
                        # in the weights' layout: at the first pair (1 channel each, which the concatenation leaves in
                        # the default layout) 2.8 against 5.0 ms
                        both = both.contiguous(memory_format=torch.channels_last_3d)
                    # _Encoder's blocks: 3x3x3, padding 1; the first of a level strided (TorchScript does not read a
                    # convolution's stride from a module taken out of a container)
                    pair = F.conv3d(both, weight, both_bias, 2 if j == 0 else 1, 1, 1, 2)
                    pair = mri_block.adn(pair)  # the activation alone (no normalisation: see pair_encoders)
                    out_channels = conv.weight.shape[0]
                    mri, pet = pair[:, :out_channels], pair[:, out_channels:]
            mri_feats.append(mri)
            pet_feats.append(pet)
        return mri_feats, pet_feats

    def forward(self, image: torch.Tensor, pet_emphasis: torch.Tensor | None = None) -> torch.Tensor:
        mri, pet = image[:, 0:1], image[:, 1:2]
        if pet_emphasis is None:
            emphasis = self.pet_emphasis.to(image.dtype).expand(image.shape[0])
        else:
            emphasis = pet_emphasis.to(device=image.device, dtype=image.dtype).reshape(-1).expand(image.shape[0])
        mri_feats, pet_feats = self._encode(mri, pet)
        blended: list[torch.Tensor] = []
        for i, blend in enumerate(self.blends):
            b, _, _ = blend(mri_feats[i], pet_feats[i])
            blended.append(b)
        if len(self.knots) == 2:
            return self.decoder(blended, mri, pet, emphasis)
        weights = anchor_weights(emphasis, self.knots, self.knot_decoder, len(self.knots) - 1)
        fused = torch.zeros_like(mri)
        shape = [weights.shape[0]] + [1] * (image.ndim - 1)
        if bool((weights[:, 0] > 0).any()):
            fused = fused + weights[:, 0].reshape(shape) * self.decoder(blended, mri, pet, emphasis)
        for k, decoder in enumerate(self.anchor_decoders):
            w = weights[:, k + 1]
            # only the decoders a lambda of the batch needs run: at an anchor, one decoder pass
            if bool((w > 0).any()):
                fused = fused + w.reshape(shape) * decoder(blended, mri, pet, emphasis)
        return fused


def on_device(network: torch.nn.Module, device: torch.device | str, cpu_channels_last: bool = True) -> torch.nn.Module:
    """``network`` on ``device``; on a CPU, with ``cpu_channels_last``, its 3D convolution weights in channels-last
    3D layout.

    Why: oneDNN runs this network's few-channel 3D convolutions much faster in that layout, and weights in it take
    every convolution there, forward and backward (the same fp32 arithmetic in another order: outputs within about
    1e-6). Measured with ``scripts/benchmark.py`` on the 2-core development machine: forward on the 1 mm brain grid
    2.34 s against 3.25 s, training step at 128^3 1.75 s against 2.24 s. ``inference.json`` and ``train.json`` use
    it (``cpu_channels_last``); the Deploy app does the same to its TorchScript model. A network with 2D
    convolutions is left as it is.
    """
    network = network.to(device)
    if cpu_channels_last and torch.device(device).type == "cpu":
        weights = [m.weight for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        if weights and all(w.ndim == 5 for w in weights):
            network = network.to(memory_format=torch.channels_last_3d)
    return network
