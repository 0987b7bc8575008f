import pytest
import torch
from monai.losses import SSIMLoss
from monai.metrics import PSNRMetric, SSIMMetric

from scripts.losses import FusionLoss, SeparableSSIMLoss
from scripts.metrics import FusionPSNRMetric, FusionSSIMMetric


@pytest.mark.parametrize("dims", [2, 3])
def test_separable_ssim_equals_monai_ssim_loss(dims):
    torch.manual_seed(0)
    a = torch.rand((2, 1) + (20,) * dims)
    b = (0.7 * a + 0.3 * torch.rand_like(a)).clamp(0, 1)
    ours = SeparableSSIMLoss(dims, win_size=7)(a, b).mean()
    reference = SSIMLoss(spatial_dims=dims, data_range=1.0, win_size=7)(a, b)
    assert abs(float(ours) - float(reference)) < 1e-5


def test_fusion_loss_is_zero_for_identical_sources_and_weights_sources():
    torch.manual_seed(0)
    mri = torch.rand(1, 1, 16, 16, 16)
    pet = torch.rand(1, 1, 16, 16, 16)
    loss = FusionLoss()
    assert float(loss(mri, torch.cat([mri, mri], 1))) < 1e-4
    # F = MRI leaves only the PET terms (weight 1 each), F = PET only the MRI terms (weight 2 each)
    only_pet_terms = float(loss(mri, torch.cat([mri, pet], 1)))
    only_mri_terms = float(loss(pet, torch.cat([mri, pet], 1)))
    assert only_mri_terms == pytest.approx(2 * only_pet_terms, rel=0.05)
    with pytest.raises(ValueError, match="target"):
        loss(mri, mri)
    with pytest.raises(ValueError, match="ssim_weights"):
        FusionLoss(ssim_weights=(1.0,))


def test_gradient_term_and_backward():
    pred = torch.rand(1, 1, 12, 12, 12, requires_grad=True)
    target = torch.rand(1, 2, 12, 12, 12)
    with_grad = FusionLoss(gradient_weight=1.0)(pred, target)
    assert float(with_grad) > float(FusionLoss()(pred, target))
    with_grad.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_fusion_metrics_average_the_two_sources():
    torch.manual_seed(0)
    f = torch.rand(2, 1, 16, 16, 16)
    src = torch.rand(2, 2, 16, 16, 16)
    psnr, ssim = FusionPSNRMetric(), FusionSSIMMetric(win_size=7)
    per_case = psnr(f, src)
    expected = (PSNRMetric(1.0)(f, src[:, :1]) + PSNRMetric(1.0)(f, src[:, 1:])) / 2
    assert torch.allclose(per_case, expected.reshape(2, 1), atol=1e-4)
    s = ssim(f, src)
    reference = (SSIMMetric(3, 1.0, win_size=7)(f, src[:, :1]) + SSIMMetric(3, 1.0, win_size=7)(f, src[:, 1:])) / 2
    assert torch.allclose(s, reference.reshape(2, 1), atol=1e-5)
    assert float(FusionSSIMMetric()(src[:, :1], torch.cat([src[:, :1]] * 2, 1)).mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(psnr.aggregate()) == pytest.approx(float(per_case.mean()), rel=1e-6)
