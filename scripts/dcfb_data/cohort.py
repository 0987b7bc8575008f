"""Simulated MRI / FDG-PET subjects built on the MNI152 2009 anatomy.

Each subject is the template anatomy moved by a smooth random deformation, with:
- a T1 MRI (intensity bias field, Rician noise, optional grey-matter atrophy) on the template grid;
- an FDG-PET (activity from tissue maps, GM:WM 4:1, CSF near 0, in Bq/ml) with a normal or an
  Alzheimer-like pattern and 0-2 small hot or cold lesions, blurred to scanner resolution, sampled on
  a coarser grid with its own field of view and count noise, registered to the MRI in world space;
- a label map of the regions where the pattern was placed and a record of every simulated parameter.

Everything is drawn from ``numpy.random.SeedSequence([cohort_seed, index])``, so a subject depends on
its seed and index only, not on how many subjects are generated with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.blocks import Warp
from monai.transforms import GaussianSmooth, RandBiasField, RandRicianNoise, SpatialResample

from .template import Template

# FDG uptake by tissue (BrainWeb FDG values: GM 128, WM 32); CSF near zero; scalp and muscle low.
ACTIVITY = {"gm": 128.0, "wm": 32.0, "csf": 2.0, "scalp": 10.0}
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

# Regions of the Alzheimer-like hypometabolism, centred by MNI coordinates (mm, RAS), radius in mm.
AD_REGIONS = [
    ("posterior_cingulate_L", (-6.0, -50.0, 28.0), 10.0),
    ("posterior_cingulate_R", (6.0, -50.0, 28.0), 10.0),
    ("precuneus_L", (-9.0, -64.0, 44.0), 12.0),
    ("precuneus_R", (9.0, -64.0, 44.0), 12.0),
    ("inferior_parietal_L", (-46.0, -56.0, 40.0), 14.0),
    ("inferior_parietal_R", (46.0, -56.0, 40.0), 14.0),
    ("lateral_temporal_L", (-58.0, -26.0, -12.0), 14.0),
    ("lateral_temporal_R", (58.0, -26.0, -12.0), 14.0),
]
# Regions spared in Alzheimer's disease: the reference for the hypometabolism contrast.
REFERENCE_REGIONS = [
    ("sensorimotor_L", (-38.0, -22.0, 56.0), 12.0),
    ("sensorimotor_R", (38.0, -22.0, 56.0), 12.0),
    ("cerebellum_L", (-24.0, -64.0, -36.0), 12.0),
    ("cerebellum_R", (24.0, -64.0, -36.0), 12.0),
]
PATTERNS = ("normal", "alzheimer")


@dataclass(frozen=True)
class SimulationFamily:
    """The ranges a cohort's subjects are drawn from (uniform in each range).

    ``standard`` is the training family. ``heldout`` uses settings the training never saw, to test whether a
    model generalises: larger deformations and other head sizes, a stronger bias field and more MR noise, another
    T1 contrast (a power law on the MR intensities), coarser PET resolution, fewer counts and a stronger
    reconstruction smoothing (another noise texture).
    """

    deformation_mm: tuple = (2.0, 5.0)
    head_scale: tuple = (1.0, 1.0)
    bias_coeff: tuple = (0.05, 0.25)
    rician_fraction: tuple = (0.015, 0.035)
    mr_gamma: tuple = (1.0, 1.0)
    pet_fwhm_mm: tuple = (6.0, 8.0)
    counts_per_gm_voxel: tuple = (80.0, 200.0)
    pet_smoothing_voxels: float = 0.6


FAMILIES = {
    "standard": SimulationFamily(),
    "heldout": SimulationFamily(deformation_mm=(5.0, 9.0), head_scale=(0.9, 1.1), bias_coeff=(0.25, 0.4),
                                rician_fraction=(0.035, 0.05), mr_gamma=(0.75, 1.3), pet_fwhm_mm=(8.5, 10.0),
                                counts_per_gm_voxel=(30.0, 70.0), pet_smoothing_voxels=1.2),
}


@dataclass
class SimulatedSubject:
    """One subject: arrays in RAS voxel order with their 4x4 RAS affines (mm).

    ``mri`` float32 (X, Y, Z) on ``mri_affine``; ``pet`` float32 (X', Y', Z') in Bq/ml on
    ``pet_affine``; ``regions`` uint8 on the MRI grid (0 = none, label numbers in ``record``).
    """

    mri: np.ndarray
    mri_affine: np.ndarray
    pet: np.ndarray
    pet_affine: np.ndarray
    regions: np.ndarray
    record: dict = field(default_factory=dict)


def subject_rng(cohort_seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(cohort_seed), int(index)]))


def _world_coords(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World (mm, RAS) coordinates of every voxel centre: array (3, X, Y, Z)."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    return world.reshape((3,) + tuple(shape))


def _plateau(world: np.ndarray, centre, radius: float, falloff_mm: float = 6.0) -> np.ndarray:
    """1 inside the sphere, falling linearly to 0 over ``falloff_mm`` outside it."""
    d = np.sqrt(sum((world[i] - np.float32(centre[i])) ** 2 for i in range(3)))
    return np.clip((radius + falloff_mm - d) / falloff_mm, 0.0, 1.0).astype(np.float32)


def _smooth_displacement(rng, shape, spacing: float, amplitude_mm: float, control_mm: float = 32.0):
    """Smooth random displacement field in voxels, shape (3, X, Y, Z), max magnitude ``amplitude_mm``.

    Random vectors on a coarse control grid, upsampled cubically: a B-spline-like free-form
    deformation with few degrees of freedom (MONAI's random elastic transforms draw their own
    randomness and cannot be tied to our per-subject seed and millimetre units).
    """
    coarse = [max(3, int(round(s * spacing / control_mm)) + 1) for s in shape]
    field_ = torch.from_numpy(rng.standard_normal((1, 3, *coarse)).astype(np.float32))
    field_ = torch.nn.functional.interpolate(field_, size=tuple(shape), mode="trilinear", align_corners=True)[0]
    magnitude = field_.norm(dim=0).max().clamp_min(1e-6)
    return field_ * (amplitude_mm / magnitude) / spacing


def _pet_grid(rng, mri_shape, mri_affine, mri_spacing: float):
    """A PET grid of its own: ~2 mm voxels, a scanner-like transaxial field of view, a shifted centre."""
    spacing_xy = max(float(rng.uniform(1.9, 2.4)), 1.5 * mri_spacing)
    spacing_z = max(float(rng.uniform(2.0, 2.8)), 1.5 * mri_spacing)
    fov = np.array([rng.uniform(250.0, 300.0), rng.uniform(250.0, 300.0), rng.uniform(170.0, 200.0)])
    spacing = np.array([spacing_xy, spacing_xy, spacing_z])
    shape = np.ceil(fov / spacing).astype(int)
    mri_centre = mri_affine[:3, :3] @ ((np.array(mri_shape) - 1) / 2.0) + mri_affine[:3, 3]
    centre = mri_centre + rng.uniform(-6.0, 6.0, size=3)
    centre[2] = 12.0 + rng.uniform(-5.0, 5.0)  # the brain's axial middle in MNI space
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = centre - spacing * (shape - 1) / 2.0
    return tuple(int(s) for s in shape), affine


def simulate_subject(
    template: Template,
    cohort_seed: int,
    index: int,
    pattern: str | None = None,
    fraction_alzheimer: float = 0.5,
    atrophy: bool = True,
    family: str = "standard",
) -> SimulatedSubject:
    """Simulate subject ``index`` of the cohort ``cohort_seed`` on ``template``'s grid.

    Args:
        template: anatomy and grid (see ``template.load_template``).
        cohort_seed, index: the subject's random stream.
        pattern: ``"normal"``, ``"alzheimer"`` or ``None`` to draw it with ``fraction_alzheimer``.
        atrophy: add grey-matter atrophy (global, stronger in the Alzheimer regions).
        family: the ranges to draw from, a key of ``FAMILIES``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    ranges = FAMILIES[family]
    if pattern is not None and pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS} or None, got {pattern!r}")
    if not 0.0 <= fraction_alzheimer <= 1.0:
        raise ValueError(f"fraction_alzheimer must be in [0, 1], got {fraction_alzheimer}")
    rng = subject_rng(cohort_seed, index)
    # draws that the standard family does not use come from a stream of their own, so that adding them left the
    # standard cohort's subjects unchanged
    extra_rng = np.random.default_rng(np.random.SeedSequence([cohort_seed, index, 1]))
    torch_seed = int(rng.integers(0, 2**31 - 1))
    drawn_pattern = "alzheimer" if rng.uniform() < fraction_alzheimer else "normal"
    pattern = pattern or drawn_pattern
    shape, affine, spacing = template.shape, template.affine, template.spacing
    world = _world_coords(shape, affine)

    gm, wm, t1 = template.gm.copy(), template.wm, template.t1
    head = (t1 > 0.04 * t1.max()).astype(np.float32)
    brain = np.clip(gm + wm, 0.0, 1.0)
    csf = np.clip(head - brain, 0.0, 1.0) * (GaussianSmooth(6.0 / spacing)(torch.from_numpy(brain[None])).numpy()[0] > 0.2)
    scalp = np.clip(head - brain - csf, 0.0, 1.0)

    # Regions: the Alzheimer targets then the spared references, labelled 1..R on the MRI grid.
    regions_record, region_weights = [], []
    depth_range = (0.15, 0.35)
    for label, (name, centre, radius) in enumerate(AD_REGIONS + REFERENCE_REGIONS, start=1):
        is_target = label <= len(AD_REGIONS)
        reduction = float(rng.uniform(*depth_range)) if (is_target and pattern == "alzheimer") else 0.0
        regions_record.append(
            {"label": label, "name": name, "role": "alzheimer_target" if is_target else "reference",
             "centre_mni_mm": list(centre), "radius_mm": radius, "reduction": round(reduction, 4)}
        )
        region_weights.append(_plateau(world, centre, radius))

    # Grey-matter atrophy: GM becomes CSF (dark on T1, no FDG uptake).
    gm_loss_global = float(rng.uniform(0.0, 0.04)) if atrophy else 0.0
    gm_loss_regional = float(rng.uniform(0.05, 0.2)) if (atrophy and pattern == "alzheimer") else 0.0
    loss = np.full(shape, gm_loss_global, dtype=np.float32)
    for w in region_weights[: len(AD_REGIONS)]:
        loss = np.maximum(loss, gm_loss_regional * w)
    gm_lost = gm * loss
    gm_t1_level = float(np.median(t1[gm > 0.9])) if np.any(gm > 0.9) else float(t1.max())
    t1_subject = np.clip(t1 - 0.7 * gm_t1_level * gm_lost, 0.0, None)
    gm = gm - gm_lost

    # FDG activity in template space (arbitrary units, GM 128).
    gm_uptake = np.ones(shape, dtype=np.float32)
    for rec, w in zip(regions_record, region_weights):
        if rec["reduction"] > 0:
            gm_uptake *= 1.0 - rec["reduction"] * w
    activity = (ACTIVITY["gm"] * gm * gm_uptake + ACTIVITY["wm"] * wm
                + ACTIVITY["csf"] * (csf + gm_lost) + ACTIVITY["scalp"] * scalp)
    lesions = []
    for _ in range(int(rng.integers(0, 3))):
        # Centre in a voxel of brain tissue, so that the lesion is visible on FDG.
        candidates = np.flatnonzero(brain.ravel() > 0.8)
        voxel = np.unravel_index(int(rng.choice(candidates)), shape)
        centre = [float(world[i][voxel]) for i in range(3)]
        radius = float(rng.uniform(4.0, 8.0))
        kind = "hot" if rng.uniform() < 0.5 else "cold"
        amplitude = float(rng.uniform(0.6, 1.5)) if kind == "hot" else -float(rng.uniform(0.5, 0.9))
        activity = activity * (1.0 + amplitude * _plateau(world, centre, radius, falloff_mm=2.0))
        lesions.append({"kind": kind, "centre_mni_mm": [round(c, 2) for c in centre],
                        "radius_mm": round(radius, 2), "amplitude": round(amplitude, 4)})

    labels = np.zeros(shape, dtype=np.float32)
    for rec, w in zip(regions_record, region_weights):
        inside = (w >= 1.0) & (brain > 0.5)
        labels[inside & (labels == 0)] = rec["label"]

    # One smooth deformation moves the anatomy, the activity and the region labels together.
    deformation_mm = float(rng.uniform(*ranges.deformation_mm))
    ddf = _smooth_displacement(rng, shape, spacing, deformation_mm)[None]
    head_scale = float(extra_rng.uniform(*ranges.head_scale))
    if head_scale != 1.0:  # a smaller or larger head: sample the template at (x - c) / scale around the grid centre
        centre = (np.array(shape, dtype=np.float32) - 1) / 2.0
        grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
        ddf = ddf + torch.from_numpy((grid - centre[:, None, None, None]) * (1.0 / head_scale - 1.0))[None]
    moving = torch.from_numpy(np.stack([t1_subject, activity]).astype(np.float32))[None]
    warped = Warp(mode="bilinear", padding_mode="zeros")(moving, ddf)[0]
    labels = Warp(mode="nearest", padding_mode="zeros")(torch.from_numpy(labels)[None, None], ddf)[0, 0]

    # MRI: bias field then Rician noise; MONAI's random transforms seeded from the subject's stream.
    intensity_scale = float(rng.uniform(2.0, 5.0))
    mri = warped[0:1] * intensity_scale
    bias = RandBiasField(degree=3, coeff_range=ranges.bias_coeff, prob=1.0)
    bias.set_random_state(seed=torch_seed)
    mri = bias(mri)
    wm_level = float(np.median(mri[0].numpy()[template.wm > 0.9])) if np.any(template.wm > 0.9) else 1.0
    rician_std = float(rng.uniform(*ranges.rician_fraction)) * wm_level
    noise = RandRicianNoise(prob=1.0, std=rician_std, sample_std=False)
    noise.set_random_state(seed=torch_seed + 1)
    mri = np.asarray(noise(mri))[0].astype(np.float32)
    mr_gamma = float(extra_rng.uniform(*ranges.mr_gamma))
    if mr_gamma != 1.0:  # another T1 contrast: a power law on the intensities, scale kept
        top = float(np.percentile(mri, 99.5)) or 1.0
        mri = (top * np.clip(mri / top, 0.0, None) ** mr_gamma).astype(np.float32)

    # PET: scanner resolution on the fine grid, then the PET's own grid, then count noise.
    fwhm_mm = float(rng.uniform(*ranges.pet_fwhm_mm))
    gm_bqml = float(rng.uniform(12000.0, 30000.0))
    blurred = GaussianSmooth(sigma=fwhm_mm * FWHM_TO_SIGMA / spacing)(warped[1:2] * (gm_bqml / ACTIVITY["gm"]))
    pet_shape, pet_affine = _pet_grid(rng, shape, affine, spacing)
    src = MetaTensor(blurred, affine=torch.as_tensor(affine))
    pet = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=np.float32)(
        src, dst_affine=torch.as_tensor(pet_affine), spatial_size=pet_shape
    )
    pet = np.clip(np.asarray(pet)[0], 0.0, None)
    voxel_ml = float(np.prod(np.abs(np.diag(pet_affine)[:3]))) / 1000.0
    counts_per_bqml = float(rng.uniform(*ranges.counts_per_gm_voxel)) / gm_bqml * (voxel_ml / 0.008)
    pet = rng.poisson(pet * counts_per_bqml).astype(np.float32) / counts_per_bqml
    pet = GaussianSmooth(sigma=ranges.pet_smoothing_voxels)(torch.from_numpy(pet)[None]).numpy()[0].astype(np.float32)

    record = {
        "pattern": pattern,
        "family": family,
        "cohort_seed": int(cohort_seed),
        "index": int(index),
        "regions": regions_record,
        "lesions": lesions,
        "mri": {"shape": list(shape), "spacing_mm": spacing, "deformation_max_mm": round(deformation_mm, 3),
                "head_scale": round(head_scale, 4), "t1_gamma": round(mr_gamma, 4),
                "bias_coeff_range": list(ranges.bias_coeff), "rician_std": round(rician_std, 4),
                "intensity_scale": round(intensity_scale, 4), "atrophy": bool(atrophy),
                "gm_loss_global": round(gm_loss_global, 4), "gm_loss_regional": round(gm_loss_regional, 4)},
        "pet": {"shape": list(pet_shape), "spacing_mm": [round(float(s), 4) for s in np.diag(pet_affine)[:3]],
                "fwhm_mm": round(fwhm_mm, 3), "gm_activity_bqml": round(gm_bqml, 1),
                "counts_per_gm_voxel": round(counts_per_bqml * gm_bqml, 1), "units": "BQML"},
    }
    return SimulatedSubject(mri=mri, mri_affine=affine.copy(), pet=pet, pet_affine=pet_affine,
                            regions=np.asarray(labels, dtype=np.uint8), record=record)
