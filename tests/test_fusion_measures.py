"""Known properties of each fusion measure: identity, symmetry, range, and small hand-computed cases."""

import math

import pytest
import torch
from monai.transforms import GaussianSmooth

from scripts import fusion_measures as fm
from scripts.metrics import (FusionAGMetric, FusionEntropyMetric, FusionMaskedPSNRMetric, FusionMaskedSSIMMetric,
                             FusionFMIMetric, FusionMIMetric, FusionNMIMetric, FusionQabfMetric, FusionSCDMetric, FusionSDMetric,
                             FusionSFMetric, FusionVIFMetric, RegionalPatternMetric, head_mask)


def smooth_volume(seed: int, shape=(24, 28, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = GaussianSmooth(sigma=2.0)(torch.rand((1, *shape), generator=g))[0]
    return (x - x.min()) / (x.max() - x.min())


A, B = smooth_volume(1), smooth_volume(2)
ALL = torch.ones_like(A, dtype=torch.bool)


def test_entropy_hand_cases():
    x = torch.tensor([0.0, 0.3, 0.6, 0.9] * 5)
    assert fm.entropy(x, torch.ones(20, dtype=torch.bool), bins=4).item() == pytest.approx(2.0)
    assert fm.entropy(torch.full((10,), 0.5), torch.ones(10, dtype=torch.bool)).item() == pytest.approx(0.0)


def test_mutual_information_identity_symmetry_and_independence():
    assert fm.mutual_information(A, A, ALL).item() == pytest.approx(fm.entropy(A, ALL).item(), abs=1e-9)
    assert fm.mutual_information(A, B, ALL).item() == pytest.approx(fm.mutual_information(B, A, ALL).item(), abs=1e-9)
    assert fm.mutual_information(A, torch.full_like(A, 0.3), ALL).item() == pytest.approx(0.0, abs=1e-12)
    assert fm.normalized_mutual_information(A, A, A, ALL).item() == pytest.approx(2.0)
    nmi = fm.normalized_mutual_information((A + B) / 2, A, B, ALL).item()
    assert 0 < nmi < 2


def test_standard_deviation_spatial_frequency_and_average_gradient_hand_cases():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    m = torch.ones_like(x, dtype=torch.bool)
    assert fm.standard_deviation(x, m).item() == pytest.approx(0.5)
    assert fm.spatial_frequency(x, m).item() == pytest.approx(1.0)  # rows: differences 1, columns: 0
    assert fm.average_gradient(x, m).item() == pytest.approx(math.sqrt(0.5))
    ramp = torch.arange(5.0)[:, None, None].expand(5, 4, 3) / 10  # 0.1 per voxel along axis 0
    mr = torch.ones_like(ramp, dtype=torch.bool)
    assert fm.spatial_frequency(ramp, mr).item() == pytest.approx(0.1)
    assert fm.average_gradient(ramp, mr).item() == pytest.approx(0.1 / math.sqrt(3))
    assert fm.spatial_frequency(torch.full_like(ramp, 0.4), mr).item() == 0.0


def test_fmi_identity_invariance_symmetry_and_range():
    assert fm.feature_mutual_information(A, A, A, ALL).item() == pytest.approx(1.0)
    # min-max scaling inside each window makes a positive affine change of F invisible: the Nelsen joint PDF
    # of two equal PDFs is their diagonal, so each window's FMI is 1
    assert fm.feature_mutual_information(0.5 * A + 0.2, A, A, ALL).item() == pytest.approx(1.0, abs=1e-4)  # float32
    f = (A + B) / 2
    value = fm.feature_mutual_information(f, A, B, ALL).item()
    assert value == pytest.approx(fm.feature_mutual_information(f, B, A, ALL).item()) and 0 < value < 1
    assert fm.feature_mutual_information(torch.full_like(A, 0.5), A, B, ALL).item() == pytest.approx(0.0, abs=1e-9)


def test_scd_range_and_ideal_case():
    assert fm.sum_of_correlations_of_differences(A + B, A, B, ALL).item() == pytest.approx(2.0)
    value = fm.sum_of_correlations_of_differences((A + B) / 2, A, B, ALL).item()
    assert -2 <= value <= 2


def test_vif_identity_degradation_and_sum_over_sources():
    assert fm.visual_information_fidelity(A, A, ALL).item() == pytest.approx(1.0, abs=1e-6)
    blurred = GaussianSmooth(sigma=1.5)(A[None])[0]
    assert 0 < fm.visual_information_fidelity(A, blurred, ALL).item() < 1
    assert fm.visual_information_fidelity(A, torch.full_like(A, 0.5), ALL).item() == pytest.approx(0.0, abs=1e-6)
    assert fm.fusion_visual_information_fidelity(A, A, A, ALL).item() == pytest.approx(2.0, abs=1e-6)


def test_qabf_identity_value_symmetry_and_range():
    c = fm.QABF_CONSTANTS
    perfect = c["gamma_g"] / (1 + math.exp(c["k_g"] * (1 - c["sigma_g"]))) * \
        c["gamma_a"] / (1 + math.exp(c["k_a"] * (1 - c["sigma_a"])))
    assert fm.qabf(A, A, A, ALL).item() == pytest.approx(perfect, abs=1e-6)
    f = (A + B) / 2
    assert fm.qabf(f, A, B, ALL).item() == pytest.approx(fm.qabf(f, B, A, ALL).item(), abs=1e-9)
    assert 0 <= fm.qabf(f, A, B, ALL).item() <= perfect
    assert fm.qabf(torch.full_like(A, 0.5), A, B, ALL).item() < 0.01


def test_masked_psnr_and_ssim():
    assert fm.masked_psnr(A + 0.1, A, ALL).item() == pytest.approx(20.0, abs=1e-4)  # float32 input
    mask = torch.zeros_like(ALL)
    mask[4:12] = True
    noisy = A.clone()
    noisy[16:] = 1 - noisy[16:]  # damage only outside the mask
    assert fm.masked_psnr(noisy, A, mask).item() > 100
    assert fm.masked_ssim(A, A, ALL).item() == pytest.approx(1.0, abs=1e-6)
    assert fm.masked_ssim(noisy, A, mask).item() == pytest.approx(1.0, abs=1e-6)


def test_regional_pattern_kept_lost_and_normal():
    regions = torch.zeros_like(A, dtype=torch.long)
    pet = torch.full_like(A, 0.8)
    for label in range(1, 13):
        regions[label, :, :] = label
        pet[label, :, :] = 0.5 if label <= 8 else 0.8  # targets 37.5 % lower than references
    pet += 0.01 * torch.arange(A.shape[0])[:, None, None]  # some spread between regions
    corr, kept = fm.regional_pattern(pet, pet, regions, range(1, 9), range(9, 13))
    assert corr.item() == pytest.approx(1.0) and kept.item() == pytest.approx(1.0)
    corr, kept = fm.regional_pattern(torch.full_like(A, 0.5), pet, regions, range(1, 9), range(9, 13))
    assert kept.item() == pytest.approx(0.0)
    _, kept = fm.regional_pattern(pet, torch.full_like(A, 0.7), regions, range(1, 9), range(9, 13))
    assert math.isnan(kept.item())  # no hypometabolism to keep


METRICS = [FusionFMIMetric, FusionEntropyMetric, FusionSDMetric, FusionSFMetric, FusionAGMetric, FusionFMIMetric, FusionMIMetric, FusionNMIMetric,
           FusionSCDMetric, FusionVIFMetric, FusionQabfMetric, FusionMaskedPSNRMetric, FusionMaskedSSIMMetric]


@pytest.mark.parametrize("metric_class", METRICS)
def test_monai_metric_wrappers_batch_and_aggregate(metric_class):
    sources = torch.stack([torch.stack([A, B]), torch.stack([B, A])])  # [2, 2, *S]
    fused = sources.mean(dim=1, keepdim=True)
    metric = metric_class()
    values = metric(fused, sources)
    assert values.shape == (2, 1) and torch.isfinite(values).all()
    assert metric.aggregate().item() == pytest.approx(values.mean().item(), rel=1e-5)
    with pytest.raises(ValueError):
        metric_class()(fused, sources[:, :1])


def test_head_mask_and_regional_metric():
    sources = torch.stack([A, B])
    sources[:, :3] = 0.0
    assert not head_mask(sources, 0.05)[:3].any() and head_mask(sources, 0.05)[3:].any()
    regions = torch.zeros((1, 1, *A.shape))
    for label in range(1, 13):
        regions[0, 0, label] = label
    metric = RegionalPatternMetric()
    values = metric(sources[None, 1:2], sources[None], regions=regions)
    assert values.shape == (1, 2) and values[0, 0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(40, 33, 21), (50, 37)])
def test_masked_ssim_is_monais_ssim_map_over_the_mask(shape):
    from monai.metrics.regression import compute_ssim_and_cs

    f, source = torch.rand(shape), torch.rand(shape)
    source[: shape[0] // 2] = f[: shape[0] // 2] * 0.8  # structure in common in one half
    mask = torch.rand(shape) > 0.3
    ssim_map, _ = compute_ssim_and_cs(f[None, None], source[None, None], spatial_dims=len(shape),
                                      kernel_size=[7] * len(shape), kernel_sigma=[1.5] * len(shape), data_range=1.0)
    inner = mask[tuple(slice(3, s - 3) for s in shape)]
    expected = ssim_map[0, 0][inner].mean()
    assert fm.masked_ssim(f, source, mask).item() == pytest.approx(expected.item(), abs=1e-6)
