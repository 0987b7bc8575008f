import os

import pytest
import torch
from monai.losses import SSIMLoss
from monai.metrics import PSNRMetric, SSIMMetric

from scripts.losses import FusionLoss, SeparableSSIMLoss
from scripts.metrics import FusionPSNRMetric, FusionSSIMMetric

BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundle")


@pytest.mark.parametrize("dims", [2, 3])
def test_separable_ssim_equals_monai_ssim_loss(dims):
    torch.manual_seed(0)
    a = torch.rand((2, 1) + (20,) * dims)
    b = (0.7 * a + 0.3 * torch.rand_like(a)).clamp(0, 1)
    ours = SeparableSSIMLoss(dims, win_size=7)(a, b).mean()
    reference = SSIMLoss(spatial_dims=dims, data_range=1.0, win_size=7)(a, b)
    assert abs(float(ours) - float(reference)) < 1e-5


def test_one_channel_prediction_shares_its_moments_across_sources():
    """SSIM of one fused image against two sources, its moments filtered once, equals SSIM of the image repeated."""
    torch.manual_seed(0)
    pred, target = torch.rand(2, 1, 20, 18, 16), torch.rand(2, 2, 20, 18, 16)
    loss = SeparableSSIMLoss(spatial_dims=3)
    assert torch.allclose(loss(pred, target), loss(pred.expand(-1, 2, -1, -1, -1), target), atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        loss(torch.rand(2, 3, 20, 18, 16), target)


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


def _pattern(seed: int, shape=(24, 24, 24)) -> torch.Tensor:
    """A volume in [0.1, 0.9] with structure of a few voxels along random directions, [1, 1, *shape]."""
    torch.manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    waves = [torch.sin((torch.randn(3) @ grid.flatten(1)).reshape(shape) / 1.5 + float(torch.rand(1)) * 6) for _ in range(3)]
    return (0.5 + 0.4 * sum(waves) / 3)[None, None]


def test_paper_weights_pull_towards_the_mri_and_the_bundle_weights_do_not():
    """Why train.json leaves the paper's weights: over blends w*MRI + (1-w)*PET the paper's 2:1 loss is
    smallest near the MRI; the bundle's (SSIM 1:1, PET low-pass) is smallest near an even blend."""
    from monai.bundle import ConfigParser

    mri, pet = _pattern(0), _pattern(1)
    target = torch.cat([mri, pet], 1)
    parser = ConfigParser()
    parser.read_config(os.path.join(BUNDLE, "configs", "train.json"))
    shares = torch.linspace(0, 1, 11)

    def best_share(loss) -> float:
        return float(shares[torch.stack([loss(w * mri + (1 - w) * pet, target) for w in shares]).argmin()])

    assert best_share(FusionLoss()) >= 0.7
    assert 0.3 <= best_share(parser.get_parsed_content("loss")) <= 0.6


def test_lowpass_term_ignores_fine_detail_and_sees_regional_level():
    pet = _pattern(2)
    torch.manual_seed(3)
    detail = 0.2 * (torch.rand_like(pet) - 0.5)  # zero-mean voxel noise: gone after the low-pass
    only_lowpass = FusionLoss(ssim_weights=(0, 0), ncc_weights=(0, 0), l1_weights=(0, 0), lowpass_weights=(0, 1),
                              lowpass_sigma=3.0)
    target = torch.cat([torch.zeros_like(pet), pet], 1)
    assert float(only_lowpass(pet, target)) < 1e-6
    noisy = float(only_lowpass((pet + detail), target))
    dimmer = float(only_lowpass(0.8 * pet, target))  # a regional level change of 20 %
    assert noisy < 0.25 * dimmer
    assert noisy < 0.25 * float(torch.abs(detail).mean())
    # all weights zero: nothing is computed and the loss is 0
    none = FusionLoss(ssim_weights=(0, 0), ncc_weights=(0, 0), l1_weights=(0, 0))
    assert float(none(pet, target)) == 0.0


def test_vif_term_is_the_metric_in_smooth_form():
    """1 - VIF(s -> F) per source: 0 for F = s, the metric's value on a whole patch otherwise, finite gradients
    (the metric's flat and negative-gain branches are replaced, also on a patch with an empty background)."""
    from scripts.fusion_measures import visual_information_fidelity

    mri, pet = _pattern(4), _pattern(5)
    mri[..., :6] = 0.0  # a flat background slab, where the metric's guards would fire
    target = torch.cat([mri, pet], 1)
    only_vif = FusionLoss(ssim_weights=(0, 0), ncc_weights=(0, 0), l1_weights=(0, 0), vif_weights=(1, 0))
    assert float(only_vif(mri, target)) < 1e-3
    fused = (0.5 * mri + 0.5 * pet).requires_grad_(True)
    everywhere = torch.ones(mri.shape[2:], dtype=torch.bool)
    expected = 1 - float(visual_information_fidelity(mri[0, 0], fused[0, 0].detach(), everywhere))
    loss = only_vif(fused, target)
    assert float(loss) == pytest.approx(expected, abs=0.01)
    loss.backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    # both weights: the PET's term is added
    both = FusionLoss(ssim_weights=(0, 0), ncc_weights=(0, 0), l1_weights=(0, 0), vif_weights=(1, 1))
    assert float(both(fused, target)) > float(loss) + 0.1
    with pytest.raises(ValueError, match="vif_weights"):
        FusionLoss(vif_weights=(1.0,))


def test_pet_emphasis_scales_the_per_source_weights():
    from scripts.conditioning import EmphasisBatch, EmphasisTarget

    torch.manual_seed(0)
    target, pred = torch.rand(2, 2, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    loss = FusionLoss(ssim_weights=(1, 1), ncc_weights=(0, 0), l1_weights=(0, 0), lowpass_weights=(0, 0.5))
    mri_only = FusionLoss(ssim_weights=(1, 0), ncc_weights=(0, 0), l1_weights=(0, 0))
    pet_only = FusionLoss(ssim_weights=(0, 1), ncc_weights=(0, 0), l1_weights=(0, 0), lowpass_weights=(0, 0.5))
    assert torch.allclose(loss(pred, target, 0.5), loss(pred, target))
    assert torch.allclose(loss(pred, target, 0.0), 2 * mri_only(pred, target))
    assert torch.allclose(loss(pred, target, 1.0), 2 * pet_only(pred, target))
    # per sample: each item of the batch with its own lambda
    lam = torch.tensor([0.0, 1.0])
    per_item = (2 * mri_only(pred[:1], target[:1]) + 2 * pet_only(pred[1:], target[1:])) / 2
    assert torch.allclose(loss(pred, EmphasisTarget(target, lam)), per_item)
    with pytest.raises(ValueError, match="pet_emphasis"):
        loss(pred, target, 1.5)
    image, label, args, kwargs = EmphasisBatch(0.2, 0.4)({"image": target}, "cpu")
    assert image is label.sources and args == () and kwargs["pet_emphasis"] is label.pet_emphasis
    assert label.pet_emphasis.shape == (2,) and bool(((label.pet_emphasis >= 0.2) & (label.pet_emphasis <= 0.4)).all())
    with pytest.raises(ValueError, match="low <= high"):
        EmphasisBatch(0.6, 0.4)


class _ConstantTeacher(torch.nn.Module):
    """A TorchScript-able stand-in for a fixed-lambda network: outputs ``value`` everywhere."""

    def __init__(self, value: float):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, image: torch.Tensor, pet_emphasis: torch.Tensor | None = None) -> torch.Tensor:
        return self.value * torch.ones_like(image[:, :1])


def test_distillation_pulls_towards_the_teacher_at_its_lambda_blends_between_and_leaves_the_rest(tmp_path):
    from scripts.conditioning import EmphasisTarget
    from scripts.distillation import TeacherDistillationLoss

    teachers = {}
    for lam in (0.2, 0.6):
        path = tmp_path / f"teacher_{lam}.ts"
        torch.jit.script(_ConstantTeacher(lam)).save(str(path))
        teachers[lam] = str(path)
    fusion = FusionLoss(spatial_dims=3, ssim_weights=(1.0, 1.0), ncc_weights=(0, 0), l1_weights=(0, 0))
    loss = TeacherDistillationLoss(fusion, teachers, weight=2.0)
    sources, pred = torch.rand(4, 2, 16, 16, 16), torch.zeros(4, 1, 16, 16, 16, requires_grad=True)
    # per sample: at a teacher's lambda its output, between them the lambda-weighted blend, outside nothing
    target = EmphasisTarget(sources, torch.tensor([0.2, 0.5, 0.6, 0.9]))
    expected_l1 = (0.2 + (0.25 * 0.2 + 0.75 * 0.6) + 0.6 + 0.0) / 4
    total = loss(pred, target)
    torch.testing.assert_close(total, fusion(pred, target) + 2.0 * torch.tensor(expected_l1))
    total.backward()
    assert pred.grad[:3].abs().sum() > 0
    outside = EmphasisTarget(sources, torch.tensor([0.0, 0.1, 0.95, 1.0]))
    torch.testing.assert_close(loss(pred, outside), fusion(pred, outside))
    assert not any("value" in k for k in loss.state_dict())  # the teachers are not saved with the student
    with pytest.raises(ValueError, match="at least one"):
        TeacherDistillationLoss(fusion, {})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        TeacherDistillationLoss(fusion, {1.5: teachers[0.2]})
    with pytest.raises(ValueError, match="does not exist"):
        TeacherDistillationLoss(fusion, {0.5: str(tmp_path / "missing.ts")})


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
@pytest.mark.parametrize("shape,taps", [((2, 3, 20, 17, 9), (7, 7, 7)), ((1, 2, 12, 30, 11), (19, 19, 19)),
                                        ((2, 4, 25, 16), (7, 19)), ((1, 1, 9, 10, 11), (3, 33, 3))])
def test_banded_separable_filtering_gives_monais_separable_filtering(shape, taps, mode):
    from monai.networks.layers import separable_filtering

    from scripts.fusion_measures import banded_separable_filtering

    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    # asymmetric kernels too (a Sobel derivative), and kernels longer than the axis
    kernels = [torch.rand(t, dtype=torch.float64) - 0.3 for t in taps]
    ours, theirs = banded_separable_filtering(x, kernels, mode), separable_filtering(x, kernels, mode)
    torch.testing.assert_close(ours, theirs)
    weights = torch.rand(shape, dtype=torch.float64)
    grad_ours, = torch.autograd.grad((ours * weights).sum(), x)
    grad_theirs, = torch.autograd.grad((theirs * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_lowpass_term_is_the_l1_distance_of_monais_gaussian_filter():
    from monai.networks.layers import GaussianFilter

    pred, target = torch.rand(2, 1, 24, 20, 16), torch.rand(2, 2, 24, 20, 16)
    loss = FusionLoss(spatial_dims=3, ssim_weights=(0, 0), ncc_weights=(0, 0), l1_weights=(0, 0),
                      lowpass_weights=(0.3, 0.7), lowpass_sigma=3.0)
    low = GaussianFilter(3, sigma=3.0, truncated=3.0)
    per_source = torch.abs(low(pred) - low(target)).flatten(2).mean(dim=2)
    torch.testing.assert_close(loss(pred, target), (per_source * torch.tensor([0.3, 0.7])).sum(dim=1).mean())
