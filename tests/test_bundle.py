"""The bundle as a user gets it: copied out of the repository, driven through MONAI's bundle machinery."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT
from monai.bundle import ConfigParser, ConfigWorkflow

TINY = {"patch_size": [32, 32, 32], "val_roi_size": [32, 32, 32], "max_epochs": 1}


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("zoo") / "dcfb_fusion"
    shutil.copytree(os.path.join(ROOT, "bundle"), dst,
                    ignore=shutil.ignore_patterns("eval", "models", "__pycache__"))
    os.makedirs(dst / "models")
    return str(dst)


def _workflow(bundle, files, workflow_type, **override):
    configs = [os.path.join(bundle, "configs", f) for f in files]
    return ConfigWorkflow(config_file=configs if len(configs) > 1 else configs[0],
                          meta_file=os.path.join(bundle, "configs", "metadata.json"),
                          logging_file=os.path.join(bundle, "configs", "logging.conf"),
                          workflow_type=workflow_type, **override)


@pytest.fixture(scope="module")
def trained_bundle(bundle_copy, tiny_cohort):
    wf = _workflow(bundle_copy, ["train.json"], "train", run_id="training", dataset_dir=tiny_cohort,
                   bundle_root=bundle_copy, **TINY)
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    assert os.path.isfile(os.path.join(bundle_copy, "models", "model.pt"))
    return bundle_copy


def test_inference_writes_fused_volume_in_mri_space(trained_bundle, tiny_cohort, tmp_path):
    wf = _workflow(trained_bundle, ["inference.json"], "infer", dataset_dir=tiny_cohort, bundle_root=trained_bundle,
                   output_dir=str(tmp_path))
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    datalist = json.load(open(os.path.join(tiny_cohort, "datalist.json")))
    for item in datalist["testing"]:
        mri = nib.load(os.path.join(tiny_cohort, item["mri"]))
        fused = nib.load(os.path.join(tmp_path, item["id"], "mri_fused.nii.gz"))
        assert fused.shape == mri.shape
        np.testing.assert_allclose(fused.affine, mri.affine, atol=1e-4)
        data = fused.get_fdata()
        assert 0.0 <= data.min() and data.max() <= 1.0 and data.std() > 0


def test_cpu_channels_last_inference_gives_the_plain_layouts_fusion(trained_bundle, tiny_cohort, tmp_path):
    """inference.json's cpu_channels_last (default on): the weights in channels-last 3D on a CPU, the fused volumes
    those of the default layout within float rounding; off, the network is left as it is."""
    fused = {}
    for on in (True, False):
        out = tmp_path / str(on)
        wf = _workflow(trained_bundle, ["inference.json"], "infer", dataset_dir=tiny_cohort, bundle_root=trained_bundle,
                       output_dir=str(out), cpu_channels_last=on)
        wf.initialize()
        # a kernel that is laid out differently in the two formats (more than one input channel, wider than 1)
        weight = next(p for p in wf.parser.get_parsed_content("network").parameters()
                      if p.ndim == 5 and p.shape[1] > 1 and p.shape[2] > 1)
        assert weight.is_contiguous(memory_format=torch.channels_last_3d) == on
        wf.run()
        wf.finalize()
        fused[on] = [nib.load(p).get_fdata() for p in sorted(out.rglob("mri_fused.nii.gz"))]
    assert len(fused[True]) == len(fused[False]) > 0
    for a, b in zip(fused[True], fused[False]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_evaluate_writes_per_case_csv_and_means(trained_bundle, tiny_cohort, tmp_path):
    wf = _workflow(trained_bundle, ["train.json", "evaluate.json"], "infer", dataset_dir=tiny_cohort,
                   bundle_root=trained_bundle, output_dir=str(tmp_path), **TINY)
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    for metric in ("val_fusion_ssim", "val_fusion_psnr"):
        rows = open(os.path.join(tmp_path, f"{metric}_raw.csv")).read().splitlines()
        assert len(rows) == 2 and "sub-" in rows[1]  # header + the one test subject
        summary = open(os.path.join(tmp_path, f"{metric}_summary.csv")).read()
        assert "mean" in summary
    assert "val_fusion_ssim" in open(os.path.join(tmp_path, "metrics.csv")).read()


def _bundle_cli(bundle, *args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd or bundle, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": bundle, **(env or {})})


def test_verify_net_in_out_and_torchscript_export(trained_bundle):
    verify = _bundle_cli(trained_bundle, "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
                         "--config_file", "configs/inference.json", "--n", "4")
    assert verify.returncode == 0, verify.stderr[-2000:]
    export = _bundle_cli(trained_bundle, "ckpt_export", "network_def", "--filepath", "models/model.ts",
                         "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
                         "--config_file", "configs/inference.json")
    assert export.returncode == 0, export.stderr[-2000:]
    sys.path.insert(0, trained_bundle)
    try:
        parser = ConfigParser()
        parser.read_config(os.path.join(trained_bundle, "configs", "inference.json"))
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(os.path.join(trained_bundle, "models", "model.pt"), map_location="cpu"))
    finally:
        sys.path.remove(trained_bundle)
    scripted = torch.jit.load(os.path.join(trained_bundle, "models", "model.ts"))
    x = torch.rand(1, 2, 32, 32, 32)
    with torch.no_grad():
        assert (scripted(x) - net.eval()(x)).abs().max() < 1e-5


def test_training_command_exactly_as_documented(bundle_copy, tiny_cohort, tmp_path):
    """`python -m monai.bundle run training --config_file <bundle>/configs/train.json --dataset_dir D`
    from another folder, and plain `run`."""
    for run_id in ("training", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file",
             os.path.join(bundle_copy, "configs", "train.json"), "--dataset_dir", tiny_cohort,
             "--max_epochs", "1", "--patch_size", "[32,32,32]", "--val_roi_size", "[32,32,32]",
             "--output_dir", str(tmp_path / run_id)],
            cwd=str(tmp_path), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "val_fusion_ssim" in proc.stdout + proc.stderr
    assert os.path.isfile(os.path.join(bundle_copy, "models", "model.pt"))


def test_training_can_start_from_a_checkpoint(trained_bundle, tiny_cohort, tmp_path):
    """``pretrained_ckpt`` loads the weights before the first step (fine-tuning on one's own data)."""
    start = os.path.join(trained_bundle, "models", "model.pt")
    wf = _workflow(trained_bundle, ["train.json"], "train", run_id="training", dataset_dir=tiny_cohort,
                   bundle_root=trained_bundle, pretrained_ckpt=start, ckpt_dir=str(tmp_path / "ckpt"),
                   output_dir=str(tmp_path / "eval"), learning_rate=0.0, **TINY)
    wf.initialize()
    wf.run()
    wf.finalize()
    before, after = torch.load(start, map_location="cpu"), torch.load(tmp_path / "ckpt" / "model.pt", map_location="cpu")
    # learning rate 0: the saved weights are the loaded ones, not a fresh initialisation
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_bad_datalist_is_refused_with_a_clear_error(bundle_copy, tiny_cohort, tmp_path):
    bad = {"training": [{"id": "x", "mri": "sub-0000/mri.nii.gz"}], "validation": []}
    (tmp_path / "datalist.json").write_text(json.dumps(bad))
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
         os.path.join(bundle_copy, "configs", "train.json"), "--dataset_dir", str(tmp_path)],
        capture_output=True, text=True)
    assert proc.returncode != 0
    assert "lacks the key(s) ['pet']" in proc.stdout + proc.stderr


def test_inference_inverts_to_a_non_ras_mri_grid(trained_bundle, tiny_cohort, tmp_path):
    """An MRI stored left-right and front-back flipped (LPS-like, as from DICOM) gets its fused image on its
    own voxels: the same values as for the RAS-stored twin, flipped back."""
    item = json.load(open(os.path.join(tiny_cohort, "datalist.json")))["testing"][0]
    data = tmp_path / "data"
    for case, flip in (("ras", False), ("flipped", True)):
        (data / case).mkdir(parents=True)
        for key in ("mri", "pet"):
            img = nib.load(os.path.join(tiny_cohort, item[key]))
            if flip:  # same voxels in the same world positions, stored in the opposite x and y order
                index_flip = np.diag([-1.0, -1.0, 1.0, 1.0])
                index_flip[:2, 3] = np.array(img.shape[:2]) - 1
                img = nib.Nifti1Image(np.asarray(img.dataobj)[::-1, ::-1, :].copy(), img.affine @ index_flip)
            nib.save(img, data / case / f"{key}.nii.gz")
    testing = [{"id": c, "mri": f"{c}/mri.nii.gz", "pet": f"{c}/pet.nii.gz"} for c in ("ras", "flipped")]
    (data / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "testing": testing}))
    wf = _workflow(trained_bundle, ["inference.json"], "infer", dataset_dir=str(data), bundle_root=trained_bundle,
                   output_dir=str(tmp_path / "eval"))
    wf.initialize()
    wf.run()
    wf.finalize()
    ras = nib.load(tmp_path / "eval" / "ras" / "mri_fused.nii.gz")
    flipped = nib.load(tmp_path / "eval" / "flipped" / "mri_fused.nii.gz")
    np.testing.assert_allclose(flipped.affine, nib.load(data / "flipped" / "mri.nii.gz").affine, atol=1e-4)
    np.testing.assert_allclose(flipped.get_fdata(), ras.get_fdata()[::-1, ::-1, :], atol=1e-5)


def test_2d_variant_trains_on_axial_slices_and_validates_slice_by_slice(bundle_copy, tiny_cohort, tmp_path):
    """train_2d.json over train.json: the same network with spatial_dims=2, 2D loss, batches of axial slices,
    validation by MONAI's SliceInferer on whole volumes; its checkpoint goes to models/variant_2d."""
    wf = _workflow(bundle_copy, ["train.json", "train_2d.json"], "train", run_id="training", dataset_dir=tiny_cohort,
                   bundle_root=bundle_copy, max_epochs=1, slice_size=[32, 32], slices_per_volume=4,
                   ckpt_dir=str(tmp_path / "ckpt"), output_dir=str(tmp_path / "eval"))
    wf.initialize()
    assert wf.parser.get_parsed_content("network_def").spatial_dims == 2
    wf.run()
    wf.finalize()
    state = torch.load(tmp_path / "ckpt" / "model.pt", map_location="cpu")
    assert any(v.ndim == 4 for v in state.values())  # 2D convolution kernels [out, in, k, k]


def test_2d_variant_with_the_3d_loss_trains_on_3d_patches_slice_by_slice(bundle_copy, tiny_cohort, tmp_path):
    """train_2d_3d_loss.json over train.json: the 2D network inside SliceWiseNet, so it trains and validates on
    the 3D model's patches with the 3D model's loss; only the network differs. Its checkpoint loads into the
    plain 2D network (keys under ``network.``) and exports to TorchScript as a 3D-in, 3D-out module."""
    wf = _workflow(bundle_copy, ["train.json", "train_2d_3d_loss.json"], "train", run_id="training",
                   dataset_dir=tiny_cohort, bundle_root=bundle_copy, ckpt_dir=str(tmp_path / "ckpt"),
                   output_dir=str(tmp_path / "eval"), **TINY)
    wf.initialize()
    net = wf.parser.get_parsed_content("network_def")
    assert type(net).__name__ == "SliceWiseNet" and net.network.spatial_dims == 2
    assert wf.parser.get_parsed_content("loss").spatial_dims == 3
    wf.run()
    wf.finalize()
    state = torch.load(tmp_path / "ckpt" / "model.pt", map_location="cpu")
    assert all(k.startswith("network.") for k in state)
    assert any(v.ndim == 4 for v in state.values())  # 2D convolution kernels [out, in, k, k]
    export = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "m.ts"),
         "--ckpt_file", str(tmp_path / "ckpt" / "model.pt"), "--meta_file", "configs/metadata.json",
         "--config_file", "['configs/inference.json','configs/train_2d_3d_loss.json']"],
        cwd=bundle_copy, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": bundle_copy})
    assert export.returncode == 0, export.stderr[-2000:]
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    assert scripted(torch.rand(1, 2, 32, 32, 8)).shape == (1, 1, 32, 32, 8)


def test_distillation_overlay_trains_the_conditioned_network_towards_fixed_lambda_teachers(bundle_copy, tiny_cohort,
                                                                                          tmp_path):
    """train_distill.json over train.json: the trainer's loss becomes the fusion loss plus the pull towards
    TorchScript teachers given as {lambda: file}; the student's checkpoint is the plain network's."""
    teacher = ConfigParser.load_config_file(os.path.join(bundle_copy, "configs", "inference.json"))["network_def"]
    parser = ConfigParser({"network_def": {**teacher, "pet_emphasis": 0.5}})
    sys.path.insert(0, bundle_copy)
    try:
        net = parser.get_parsed_content("network_def")
    finally:
        sys.path.remove(bundle_copy)
    torch.jit.script(net.eval()).save(str(tmp_path / "teacher.ts"))
    wf = _workflow(bundle_copy, ["train.json", "train_distill.json"], "train", run_id="training",
                   dataset_dir=tiny_cohort, bundle_root=bundle_copy, ckpt_dir=str(tmp_path / "ckpt"),
                   output_dir=str(tmp_path / "eval"), distill_teachers={"0.5": str(tmp_path / "teacher.ts")},
                   pet_emphasis_range=[0.5, 0.5], **TINY)
    wf.initialize()
    loss = wf.parser.get_parsed_content("train#trainer#loss_function")
    assert type(loss).__name__ == "TeacherDistillationLoss" and loss.lambdas == [0.5]
    wf.run()
    wf.finalize()
    state = torch.load(tmp_path / "ckpt" / "model.pt", map_location="cpu")
    assert state.keys() == net.state_dict().keys()


def test_anchor_overlay_trains_one_anchor_decoder_and_nothing_else(bundle_copy, tiny_cohort, tmp_path):
    """train_anchor.json over train.json, from an anchored checkpoint assembled from a conditioned network
    (scripts.anchor_decoders): at lambda 0.5 only the decoder of anchor 0.5 learns; the encoders, the blocks, the
    conditioned decoder and the other anchors' decoders leave the training unchanged."""
    sys.path.insert(0, bundle_copy)
    try:
        from scripts.anchor_decoders import assemble
        from scripts.dcfb_net import DCFBNet

        torch.manual_seed(0)
        base = DCFBNet(norm="NONE", separable_offsets=True)  # as train.json builds it
        torch.save(base.state_dict(), tmp_path / "base.pt")
        start = assemble(str(tmp_path / "base.pt"), {0.3: None, 0.5: None, 0.7: None}, str(tmp_path / "start.pt"))
        wf = _workflow(bundle_copy, ["train.json", "train_anchor.json"], "train", run_id="training",
                       dataset_dir=tiny_cohort, bundle_root=bundle_copy, ckpt_dir=str(tmp_path / "ckpt"),
                       output_dir=str(tmp_path / "eval"), pretrained_ckpt=start, pet_emphasis=0.5, **TINY)
        wf.initialize()
        wf.run()
        wf.finalize()
    finally:
        sys.path.remove(bundle_copy)
    before = torch.load(start, map_location="cpu")
    after = torch.load(tmp_path / "ckpt" / "model_final.pt", map_location="cpu")
    assert after.keys() == before.keys()
    changed = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("anchor_decoders") else "")
               for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"anchor_decoders.1"}


def test_2d_variant_with_the_3d_loss_is_the_3d_network_but_two_dimensional():
    """train_2d_3d_loss.json's inner 2D network takes train.json's settings (features, attention, normalisation,
    lambda): only the dimension differs, so that the comparison measures the dimension."""
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, "bundle", "configs", n) for n in ("train.json", "train_2d_3d_loss.json")])
    inner = parser.get("network_def")["network"]
    reference = ConfigParser.load_config_file(os.path.join(ROOT, "bundle", "configs", "train.json"))["network_def"]
    assert inner["spatial_dims"] == 2
    for key in ("features", "num_heads", "num_points", "max_offset", "norm", "pet_emphasis", "separable_offsets"):
        assert inner[key] == reference[key], key


def test_comparison_script_trains_exports_and_continues_from_a_stage(tiny_cohort, tmp_path):
    """scripts/train_comparison.sh, the documented way the release weights and the ablation were trained: one
    run, exported to TorchScript, then a second stage that starts from the first stage's checkpoint."""
    script = os.path.join(ROOT, "scripts", "train_comparison.sh")
    env = {**os.environ, "PY": sys.executable, "EPOCHS": "1", "VAL_INTERVAL": "1", "DATA": tiny_cohort,
           "TRAIN_ARGS": "--patch_size [32,32,32] --val_roi_size [32,32,32] --loss#vif_weights [0,0]"}
    first = subprocess.run([script, "zero_offsets", "dcfb_2d_3d_loss"], env={**env, "OUT": str(tmp_path / "stage1")},
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("zero_offsets", "dcfb_2d_3d_loss"):
        scripted = torch.jit.load(str(tmp_path / "stage1" / name / "model.ts"))
        assert scripted(torch.rand(1, 2, 32, 32, 32)).shape == (1, 1, 32, 32, 32)
    second = subprocess.run([script, "zero_offsets"], capture_output=True, text=True,
                            env={**env, "OUT": str(tmp_path / "stage2"), "PRETRAINED": str(tmp_path / "stage1"),
                                 "TRAIN_ARGS": "--patch_size [32,32,32] --val_roi_size [32,32,32]"})
    assert second.returncode == 0, second.stdout + second.stderr
    log = (tmp_path / "stage2" / "zero_offsets" / "train.log").read_text()
    assert "Restored all variables from" in log and "zero_offsets/model.pt" in log
    assert (tmp_path / "stage2" / "zero_offsets" / "model.ts").is_file()
    missing = subprocess.run([script, "dcfb_2d"], capture_output=True, text=True,
                             env={**env, "OUT": str(tmp_path / "stage3"), "PRETRAINED": str(tmp_path / "stage1")})
    assert missing.returncode != 0 and "no " in missing.stderr and "dcfb_2d/model.pt" in missing.stderr
