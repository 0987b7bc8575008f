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
        net.decoder.head.weight.zero_()
        net.decoder.head.bias.copy_(torch.tensor([1.0, 0.0, 0.2]))
        x = torch.rand(1, 2, 16, 16, 16) * 0.5
        assert torch.allclose(net(x), x[:, 0:1] + 0.2, atol=1e-6)


def test_pet_emphasis_conditions_the_output_and_is_a_buffer_of_the_exported_model():
    torch.manual_seed(0)
    net = DCFBNet(features=(8, 16), pet_emphasis=0.3).eval()
    x = torch.rand(1, 2, 16, 16, 16)
    with torch.no_grad():
        # FiLM starts as the identity: lambda changes nothing until trained
        assert torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([1.0])))
        for film in [net.decoder.deepest_film, net.decoder.detail_film, *net.decoder.decoder_films]:
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
        for film in [net.decoder.deepest_film, net.decoder.detail_film, *net.decoder.decoder_films]:
            film.mlp[2].weight.normal_(0, 0.5)
        net.decoder.detail_out.weight.normal_(0, 0.05)
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


def test_anchor_weights_interpolate_piecewise_linearly_and_a_knot_wakes_one_decoder():
    from scripts.dcfb_net import anchor_weights

    knots, owners = [0.0, 0.3, 0.5, 0.7, 1.0], [0, 1, 2, 3, 0]
    lam = torch.tensor([0.0, 0.15, 0.3, 0.4, 0.5, 0.65, 0.7, 0.85, 1.0])
    w = anchor_weights(lam, knots, owners, 4)
    expected = torch.tensor(
        [[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 1, 0], [0, 0, 0.25, 0.75],
         [0, 0, 0, 1], [0.5, 0, 0, 0.5], [1, 0, 0, 0]]
    )
    assert torch.allclose(w, expected, atol=1e-6)
    # a lambda on a knot gives exactly one decoder a weight (float32 rounding must not wake a neighbour)
    on_knots = anchor_weights(torch.tensor([0.3, 0.5, 0.7]), knots, owners, 4)
    assert ((on_knots > 0).sum(dim=1) == 1).all()


def _plain_with_decoder(net: DCFBNet, decoder: torch.nn.Module) -> DCFBNet:
    """A network without anchors: ``net``'s encoders and blocks, ``decoder`` as its conditioned decoder."""
    plain = DCFBNet(features=(8, 16), norm="NONE").eval()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith(("decoder.", "anchor_decoders."))}
    state.update({"decoder." + k: v for k, v in decoder.state_dict().items()})
    plain.load_state_dict(state)
    return plain


def test_anchor_decoders_one_pass_at_an_anchor_a_blend_between_and_scripted():
    """``anchor_pet_emphasis``: at an anchor the output is that anchor's decoder alone, and it is the only decoder
    that runs; between two anchors, the linear blend of their outputs; below the first and above the last, the
    blend with the lambda-conditioned decoder, which owns 0 and 1; TorchScript gives the same, per-sample lambdas
    of a batch included."""
    torch.manual_seed(0)
    net = DCFBNet(features=(8, 16), norm="NONE", anchor_pet_emphasis=(0.3, 0.5, 0.7)).eval()
    decoders = [net.decoder, *net.anchor_decoders]
    with torch.no_grad():  # decoders that differ from each other, with every path active
        for decoder in decoders:
            for film in [decoder.deepest_film, decoder.detail_film, *decoder.decoder_films]:
                film.mlp[2].weight.normal_(0, 0.5)
            decoder.detail_out.weight.normal_(0, 0.05)
            decoder.head.weight.normal_(0, 0.1)
    calls = [0] * len(decoders)
    hooks = [
        decoder.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, decoder in enumerate(decoders)
    ]
    x = torch.rand(2, 2, 16, 16, 16)

    def alone(decoder, lam):
        return _plain_with_decoder(net, decoder)(x, torch.tensor([lam]))

    with torch.no_grad():
        at_anchor = net(x, torch.tensor([0.5]))
        assert calls == [0, 0, 1, 0]
        assert torch.allclose(at_anchor, alone(net.anchor_decoders[1], 0.5), atol=1e-6)
        between = 0.25 * alone(net.anchor_decoders[1], 0.65) + 0.75 * alone(net.anchor_decoders[2], 0.65)
        assert (net(x, torch.tensor([0.65])) - between).abs().max() < 1e-5
        outside = 0.5 * alone(net.decoder, 0.15) + 0.5 * alone(net.anchor_decoders[0], 0.15)
        assert (net(x, torch.tensor([0.15])) - outside).abs().max() < 1e-5
        assert torch.allclose(net(x, torch.tensor([1.0])), alone(net.decoder, 1.0), atol=1e-6)
        assert (net(x, torch.tensor([0.3])) - net(x, torch.tensor([0.7]))).abs().max() > 1e-3
        for hook in hooks:
            hook.remove()
        scripted = torch.jit.script(net)
        mixed = torch.tensor([0.4, 0.9])
        assert (scripted(x, mixed) - net(x, mixed)).abs().max() < 1e-5
        assert (scripted(x, mixed)[1:] - net(x[1:], mixed[1:])).abs().max() < 1e-5
        scripted.pet_emphasis.fill_(0.3)
        assert (scripted(x) - net(x, torch.tensor([0.3]))).abs().max() < 1e-5
    for bad in ((0.5, 0.3), (0.0, 0.5), (0.5, 1.0), (0.5, 0.5)):
        with pytest.raises(ValueError, match="anchor_pet_emphasis"):
            DCFBNet(features=(8, 16), anchor_pet_emphasis=bad)


def test_anchor_checkpoint_assembled_from_networks_on_one_encoder(tmp_path):
    """``scripts.anchor_decoders.assemble``: a base network's encoders, blocks and decoder, and the decoders of
    networks trained from it at one lambda each (checkpoints in the names of bundle 0.6.0 included), load into the
    anchored network; an anchor network whose encoder differs, or a missing file, is refused by name."""
    from scripts.anchor_decoders import assemble
    from scripts.dcfb_net import LEGACY_DECODER_PARTS

    torch.manual_seed(0)
    base = DCFBNet(features=(8, 16), norm="NONE").eval()
    tuned = DCFBNet(features=(8, 16), norm="NONE").eval()
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        tuned.decoder.head.bias.add_(0.1)
    legacy = {
        (k[len("decoder.") :] if k[len("decoder.") :].startswith(LEGACY_DECODER_PARTS) else k): v
        for k, v in tuned.state_dict().items()
    }
    assert "head.bias" in legacy
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(legacy, tmp_path / "tuned.pt")  # as bundle 0.6.0 saved it
    out = assemble(str(tmp_path / "base.pt"), {0.7: None, 0.5: str(tmp_path / "tuned.pt")}, str(tmp_path / "a.pt"))
    anchored = DCFBNet(features=(8, 16), norm="NONE", anchor_pet_emphasis=(0.5, 0.7)).eval()
    anchored.load_state_dict(torch.load(out, weights_only=True))
    x = torch.rand(1, 2, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(anchored(x, torch.tensor([0.5])), tuned(x, torch.tensor([0.5])), atol=1e-6)
        assert torch.allclose(anchored(x, torch.tensor([0.7])), base(x, torch.tensor([0.7])), atol=1e-6)
        assert torch.allclose(anchored(x, torch.tensor([0.85])), base(x, torch.tensor([0.85])), atol=1e-6)

    other = DCFBNet(features=(8, 16), norm="NONE")  # another seed: another encoder
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*not trained on the same encoder"):
        assemble(str(tmp_path / "base.pt"), {0.5: str(tmp_path / "other.pt")}, str(tmp_path / "b.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        assemble(str(tmp_path / "base.pt"), {0.5: str(tmp_path / "missing.pt")}, str(tmp_path / "c.pt"))
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "c.pt").exists()
    # the command line (python -m scripts.anchor_decoders): anchors as a Python literal, a bad one is a usage error
    from scripts.anchor_decoders import main

    assert main(["--base", str(tmp_path / "base.pt"), "--anchors", "{0.5: None}", "--output", str(tmp_path / "d.pt")]) == 0
    assert set(torch.load(tmp_path / "d.pt", weights_only=True)) >= {"anchor_decoders.0.head.bias", "decoder.head.bias"}
    with pytest.raises(SystemExit) as usage:
        main(["--base", str(tmp_path / "base.pt"), "--anchors", "[0.5]", "--output", str(tmp_path / "e.pt")])
    assert usage.value.code == 2


@pytest.mark.parametrize("dims", [2, 3])
def test_inference_paths_equal_the_training_path(dims):
    """At inference the decoder folds the detail path's FiLM into its convolution, modulates in place and runs the
    detail path over slabs of the first axis (``detail_slab_voxels``); the blend takes its difference in place. All
    of it must give what the training path computes, in one pass or in slabs (uneven ones included), scripted too,
    and must leave the network's input and its anchor decoders' shared features untouched."""
    torch.manual_seed(0)
    net = DCFBNet(spatial_dims=dims, features=(8, 16, 32), anchor_pet_emphasis=(0.5,), norm="NONE")  # as released
    with torch.no_grad():
        for decoder in (net.decoder, *net.anchor_decoders):
            for film in [decoder.deepest_film, decoder.detail_film, *decoder.decoder_films]:
                film.mlp[2].weight.normal_(0, 0.5)
                film.mlp[2].bias.normal_(0, 0.2)
            decoder.detail_out.weight.normal_(0, 0.05)
    shape = (40,) + (24,) * (dims - 1)
    x = torch.rand((1, 2) + shape)
    original = x.clone()
    lam = torch.tensor([0.4])  # between two knots: both decoders run on the same blended features
    with torch.no_grad():
        expected = net.train()(x, lam)
        net.eval()
        outputs = [net(x, lam)]
        for slab in (24**dims // 5, 24 ** (dims - 1) * 7):  # 8 slabs of 5 rows; 6 of 7 rows, the last of 5
            for decoder in (net.decoder, *net.anchor_decoders):
                decoder.detail_slab_voxels = slab
            outputs += [net(x, lam), torch.jit.script(net)(x, lam)]
    assert torch.equal(x, original)
    for out in outputs:
        assert out.shape == expected.shape
        assert (out - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("shape", [(40, 24, 24), (160, 160, 8)])
def test_encoders_paired_at_inference_give_each_encoders_features(shape):
    """At inference the two encoders run a convolution that PyTorch would give its slow reference kernel as one grouped
    convolution (``DCFBNet._encode``): at 40x24x24 every one, at 160x160x8 only the deepest level's second (the others
    exceed the kernel's N*C*D*H bound). The features must be each encoder's own, scripted too."""
    torch.manual_seed(0)
    net = DCFBNet(features=(8, 16, 32), norm="NONE").eval()
    assert net.pair_encoders
    mri, pet = torch.rand((1, 1) + shape), torch.rand((1, 1) + shape)
    with torch.no_grad():
        expected = net.mri_encoder(mri) + net.pet_encoder(pet)
        for encode in (net._encode, torch.jit.script(net)._encode):
            mri_feats, pet_feats = encode(mri, pet)
            for got, want in zip(mri_feats + pet_feats, expected):
                assert got.shape == want.shape
                assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_separable_offsets_start_at_zero_learn_and_export(dims):
    """``separable_offsets``: the offsets from a depthwise and a 1x1 convolution. An untrained one reads the voxel
    itself (as the full convolution does), gradients reach both layers, and the network scripts and exports."""
    torch.manual_seed(0)
    att = DeformableCrossAttention(dims, 8, num_heads=2, num_points=3, separable_offsets=True)
    assert [m.groups for m in att.offsets] == [16, 1]
    q, c = torch.rand((1, 8) + (10,) * dims), torch.rand((1, 8) + (10,) * dims)
    with torch.no_grad():
        assert att.sampling_offsets(q, c).abs().max() == 0
    net = DCFBNet(spatial_dims=dims, features=(8, 16, 32), separable_offsets=True, norm="NONE")
    x = torch.rand((1, 2) + (32,) * dims)
    depthwise, pointwise = net.blends[1].cross[0].offsets
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x).mean().backward()  # the 1x1 layer starts at zero: it learns first, then the depthwise one through it
    assert pointwise.weight.grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    net(x).mean().backward()
    assert depthwise.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert (torch.jit.script(net)(x) - net(x)).abs().max().item() < 1e-5
    with pytest.raises(TypeError, match="separable_offsets"):
        DCFBNet(features=(8, 16), separable_offsets="true")


def test_separable_offsets_converted_from_full_ones(tmp_path):
    """``scripts.separable_offsets``: a full offset kernel of rank one per input channel converts exactly (the
    network's output is unchanged); a trained kernel converts to its nearest such kernel (the output moves, the
    offsets' error stays below the kernel's own distance from rank one); a checkpoint without full offset
    convolutions is refused by name."""
    from scripts.separable_offsets import convert, factor_kernel, main

    torch.manual_seed(0)
    full = DCFBNet(features=(8, 16, 32), norm="NONE").eval()
    with torch.no_grad():
        for block in full.blends:
            for att in block.cross:
                out_ch, in_ch = att.offsets.weight.shape[:2]
                pointwise, spatial = torch.randn(out_ch, in_ch, 1, 1, 1), torch.randn(1, in_ch, 3, 3, 3)
                att.offsets.weight.copy_(0.02 * pointwise * spatial)  # rank one per input channel
                att.offsets.bias.normal_(0, 0.1)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    assert main(["--checkpoint", str(tmp_path / "full.pt"), "--output", str(tmp_path / "sep.pt")]) == 0
    separable = DCFBNet(features=(8, 16, 32), norm="NONE", separable_offsets=True).eval()
    separable.load_state_dict(torch.load(tmp_path / "sep.pt", weights_only=True))
    x = torch.rand(1, 2, 32, 32, 32)
    with torch.no_grad():
        assert (separable(x) - full(x)).abs().max().item() < 1e-5

    weight = torch.randn(12, 6, 3, 3, 3)  # a generic kernel: only approximated
    dw, dw_bias, pw, pw_bias = factor_kernel(weight, torch.zeros(12))
    approx = pw.reshape(12, 6, 1) * dw.reshape(1, 6, 27)
    error = (approx - weight.reshape(12, 6, 27)).norm()
    assert 0 < error < weight.norm()
    assert torch.equal(dw_bias, torch.zeros(6)) and torch.equal(pw_bias, torch.zeros(12))

    with pytest.raises(ValueError, match="sep.pt: no full offset convolutions"):
        convert(str(tmp_path / "sep.pt"), str(tmp_path / "again.pt"))
    assert main(["--checkpoint", str(tmp_path / "sep.pt"), "--output", str(tmp_path / "again.pt")]) == 1
    assert not (tmp_path / "again.pt").exists()
