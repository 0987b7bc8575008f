import math
import os

import pytest
import torch

from scripts.dcfb_net import DCFBNet, DeformableCrossAttention


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_range_and_exports(dims):
    torch.manual_seed(0)
    net = DCFBNet(spatial_dims=dims, features=(8, 16, 32)).eval()
    x = torch.rand((1, 2) + (32,) * dims)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 1) + (32,) * dims
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        scripted = torch.jit.script(net)
        traced = torch.jit.trace(net, x)
        exported = torch.export.export(net, (x,)).module()
        for other in (scripted(x), traced(x), exported(x)):
            assert (other - y).abs().max().item() < 1e-5


def _attention(dims=3, channels=8):
    torch.manual_seed(0)
    return DeformableCrossAttention(dims, channels, num_heads=2, num_points=3, max_offset=4.0).eval()


def test_offsets_start_at_zero_and_then_attention_reads_the_voxel_itself():
    att = _attention()
    q, c = torch.rand(1, 8, 8, 10, 12), torch.rand(1, 8, 8, 10, 12)
    with torch.no_grad():
        assert att.sampling_offsets(q, c).abs().max() == 0
        expected = att.project(att.value(c))  # softmax weights sum to 1 over identical samples
        assert torch.allclose(att(q, c), expected, atol=1e-5)


def test_offsets_reach_several_voxels_along_the_right_axis():
    att = _attention()
    shift = 3.0  # voxels along the first spatial axis (D), several voxels as the design asks
    with torch.no_grad():
        bias = torch.zeros(2, 3, 3)
        bias[:, :, 0] = math.atanh(shift / att.max_offset)
        att.offsets.bias.copy_(bias.flatten())
        q, c = torch.rand(1, 8, 12, 10, 9), torch.rand(1, 8, 12, 10, 9)
        offsets = att.sampling_offsets(q, c)
        assert torch.allclose(offsets[:, :, :, 0], torch.full_like(offsets[:, :, :, 0], shift), atol=1e-4)
        value = att.value(c)
        shifted = torch.zeros_like(value)
        shifted[:, :, :-3] = value[:, :, 3:]  # sample at d + 3
        expected = att.project(shifted)
        assert torch.allclose(att(q, c)[:, :, :-3], expected[:, :, :-3], atol=1e-4)


def test_offsets_learn():
    net = DCFBNet(features=(8, 16, 32))
    x = torch.rand(1, 2, 32, 32, 32)
    net(x).mean().backward()
    grad = net.blends[1].cross[0].offsets.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_ablation_switches_and_bad_arguments():
    x = torch.rand(1, 2, 16, 16, 16)
    shared = DCFBNet(features=(8, 16), shared_encoder=True)
    assert shared.mri_encoder is shared.pet_encoder
    plain = DCFBNet(features=(8, 16), cross_attention=False)
    assert plain(x).shape == (1, 1, 16, 16, 16) and all(len(b.cross) == 0 for b in plain.blends)
    with pytest.raises(ValueError, match="spatial_dims"):
        DeformableCrossAttention(4, 8)
    with pytest.raises(ValueError, match="divisible"):
        DeformableCrossAttention(3, 10, num_heads=4)


def test_ablation_override_typed_on_the_command_line_is_refused_unless_a_bool():
    """`monai.bundle run ... --network_def#cross_attention false` hands over the string 'false' (truthy):
    training would silently keep the attention. The bundle's parser sees the same strings as the CLI."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": {"_target_": "scripts.dcfb_net.DCFBNet", "features": [8, 16]}})
    parser["network_def#cross_attention"] = "false"
    with pytest.raises(RuntimeError, match="DCFBNet") as failed:
        parser.get_parsed_content("network_def")
    assert "cross_attention must be a bool" in str(failed.value.__cause__)
    with pytest.raises(TypeError, match="shared_encoder"):
        DCFBNet(features=(8, 16), shared_encoder="true")


def test_slicewise_net_fuses_each_axial_slice_alone_and_exports():
    from scripts.slicewise import SliceWiseNet

    torch.manual_seed(0)
    inner = DCFBNet(spatial_dims=2, features=(8, 16, 32)).eval()
    net = SliceWiseNet(inner).eval()
    x = torch.rand(2, 2, 16, 24, 5)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 1, 16, 24, 5)
        for b in range(2):
            for z in range(5):
                assert torch.allclose(y[b, :, :, :, z], inner(x[b:b + 1, :, :, :, z])[0], atol=1e-5)
        assert (torch.jit.script(net)(x) - y).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="2D network"):
        SliceWiseNet(DCFBNet(spatial_dims=3, features=(8, 16)))
    with pytest.raises(ValueError, match=r"\[B, C, H, W, D\]"):
        net(torch.rand(1, 2, 16, 16))


def test_head_adds_a_smooth_level_to_full_resolution_detail():
    """The head is not a convex mix: with the MRI gain at 1, the PET gain at 0 and an offset of 0.2 the output is
    the MRI plus 0.2 (a convex mix of MRI, PET and a synthesised image cannot lift the MRI's full contrast)."""
    net = DCFBNet(features=(8, 16)).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([1.0, 0.0, 0.2]))
        x = torch.rand(1, 2, 16, 16, 16) * 0.5
        assert torch.allclose(net(x), x[:, 0:1] + 0.2, atol=1e-6)


def test_pet_emphasis_conditions_the_output_and_is_a_buffer_of_the_exported_model():
    torch.manual_seed(0)
    net = DCFBNet(features=(8, 16), pet_emphasis=0.3).eval()
    x = torch.rand(1, 2, 16, 16, 16)
    with torch.no_grad():
        # FiLM starts as the identity: lambda changes nothing until trained
        assert torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([1.0])))
        for film in [net.deepest_film, net.detail_film, *net.decoder_films]:
            film.mlp[2].weight.normal_(0, 0.5)
        low, high = net(x, torch.tensor([0.1])), net(x, torch.tensor([0.9]))
        assert (low - high).abs().max() > 1e-3
        assert torch.allclose(net(x), net(x, torch.tensor([0.3])))  # the buffer is the default lambda
        scripted = torch.jit.script(net)
        scripted.pet_emphasis.fill_(0.9)
        assert torch.allclose(scripted(x), high, atol=1e-5)
    assert "pet_emphasis" not in net.state_dict()  # a setting, not a weight: checkpoints do not override it
    with pytest.raises(ValueError, match="pet_emphasis"):
        DCFBNet(features=(8, 16), pet_emphasis=1.5)


def test_tiles_with_a_context_margin_equal_one_pass_and_windows_do_not():
    """WholeVolumeInferer beyond its budget: tiles whose cores start on the network's coarsest grid, each run with a
    margin of context that is then dropped, stitch to the network's one pass over the whole volume; MONAI's blended
    sliding windows (borders cut off from their context) do not, which this test would catch."""
    from monai.inferers import SlidingWindowInferer
    from scripts.inferers import WholeVolumeInferer, tile_cores

    assert tile_cores([100, 40, 30], 10**9, 16, 8) == [[(0, 100)], [(0, 40)], [(0, 30)]]
    cores = tile_cores([100, 40, 30], 72 * 40 * 30, 8, 8)  # two cores of at most 56, each with 8 of context
    assert [len(c) for c in cores] == [2, 1, 1] and cores[0] == [(0, 56), (56, 100)]
    assert all(lo % 8 == 0 for axis in tile_cores([197, 233, 189], 2_000_000, 48, 8) for lo, _ in axis)
    with pytest.raises(ValueError, match="cannot be tiled"):
        tile_cores([64, 64, 64], 1000, 48, 8)

    torch.manual_seed(0)
    x = torch.zeros(1, 2, 96, 88, 40)
    x[:, :, 12:84, 12:76, 6:34] = torch.rand(1, 2, 72, 64, 28) * 0.5 + 0.3  # a "head" on a flat background
    net = DCFBNet(features=(8, 16, 32), norm="NONE").eval()
    tiles = WholeVolumeInferer(max_voxels=64 * 88 * 40, context_margin=32, divisor=8)
    assert tiles.uses_tiles(x) and not WholeVolumeInferer(max_voxels=0).uses_tiles(x)
    with torch.no_grad():
        whole = net(x)
        assert (tiles(x, net) - whole).abs().max() < 1e-5
        windows = SlidingWindowInferer(roi_size=(48, 48, 40), overlap=0.5, mode="gaussian")
        assert (windows(x, net) - whole).abs().max() > 1e-4
    with pytest.raises(ValueError, match="max_voxels"):
        WholeVolumeInferer(max_voxels=-1)
    with pytest.raises(ValueError, match="multiple of divisor"):
        WholeVolumeInferer(context_margin=12, divisor=8)


def test_channel_norm_is_per_voxel_and_the_network_takes_it():
    """ChannelNorm's output at a voxel depends on that voxel's channels only (unlike instance normalisation, which
    depends on the whole input): the same on a crop as on the whole; DCFBNet(norm="CHANNEL") scripts and runs."""
    from scripts.dcfb_net import ChannelNorm

    torch.manual_seed(0)
    norm = ChannelNorm(6)
    x = torch.randn(2, 6, 10, 12, 8) * 3 + 1
    assert torch.allclose(norm(x)[..., 2:5], norm(x[..., 2:5]), atol=1e-6)
    assert torch.allclose(norm(x).mean(dim=1), torch.zeros(2, 10, 12, 8), atol=1e-5)
    instance = torch.nn.InstanceNorm3d(6)
    assert not torch.allclose(instance(x)[..., 2:5], instance(x[..., 2:5]), atol=1e-3)
    net = DCFBNet(features=(8, 16), norm="CHANNEL").eval()
    assert any(isinstance(m, ChannelNorm) for m in net.modules())
    y = torch.rand(1, 2, 16, 16, 16)
    with torch.no_grad():
        assert (torch.jit.script(net)(y) - net(y)).abs().max() < 1e-5


def test_the_bundles_inference_leaves_no_seam_on_a_volume_larger_than_a_window():
    """The bundle's configured network and inferer (``configs/inference.json``, seeded weights with every path
    active) on a head larger than one tile (the budget lowered so that the volume is cut into tiles): in the
    background and in the head, the fused image equals one pass of the network over the whole volume, which has no
    tile borders, within the fused series' stored step (1/4095). Windows each normalised on their own statistics
    (instance normalisation, the network of bundle 0.4) left steps of their own level (0.08 of full scale here), and
    windows cut off from the context beyond their borders leave edges: either fails this test."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "bundle", "configs", "inference.json"))
    shape = [136, 128, 112]
    parser["max_voxels_one_pass"] = 1_550_000  # four tiles of 120 x 112 x 112 with their context
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    # a seeded network's FiLM layers and detail path start as the identity and zero: give them weights, so that
    # every path a trained network uses reaches the output
    with torch.no_grad():
        for film in [net.deepest_film, net.detail_film, *net.decoder_films]:
            film.mlp[2].weight.normal_(0, 0.5)
        net.detail_out.weight.normal_(0, 0.05)
    inferer = parser.get_parsed_content("inferer")
    x = torch.zeros(1, 2, *shape)
    head = (slice(None), slice(None), *(slice(20, s - 20) for s in shape))
    x[head] = torch.rand(1, 2, *[s - 40 for s in shape]) * 0.5 + 0.3
    with torch.no_grad():
        assert inferer.uses_tiles(x)
        difference = (inferer(x, net) - net(x)).abs()[0, 0]
    in_head = torch.zeros_like(difference, dtype=torch.bool)
    in_head[head[2:]] = True
    step = 1 / 4095
    assert difference[~in_head].max() < step, f"steps in the background: {float(difference[~in_head].max()):.4f}"
    assert difference[in_head].max() < step, f"steps in the head: {float(difference[in_head].max()):.4f}"
