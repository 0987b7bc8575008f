"""The MONAI Model Zoo's own checks on the bundle, run offline with the Zoo's settings (tests/model_zoo/README.md):
metadata schema, network shape at the metadata's smallest size, TorchScript export and load, workflow properties
without data, code format, the pre-commit hooks, the weights' list and the zip a user downloads."""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import pytest
import torch
from conftest import ROOT
from monai.bundle import ckpt_export, create_workflow, download, verify_metadata, verify_net_in_out

ZOO = os.path.join(ROOT, "tests", "model_zoo")
BUNDLE = os.path.join(ROOT, "bundle")
BIN = os.path.dirname(sys.executable)


def _copy_bundle(dst, weights=True):
    ignore = ["eval", "logs", "__pycache__", "large_files.yml"] + ([] if weights else ["*.pt", "*.ts"])
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns(*ignore))
    return str(dst)


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory):
    """The bundle where a model-zoo checkout holds it, with the schema where the Zoo's prepare_schema.py puts it."""
    bundle = _copy_bundle(tmp_path_factory.mktemp("model-zoo") / "models" / "brain_mri_pet_fusion")
    os.makedirs(os.path.join(bundle, "eval"))
    shutil.copy(os.path.join(ZOO, "meta_schema_20240725.json"), os.path.join(bundle, "eval", "schema.json"))
    return bundle


def _tool(name, *args, cwd=None):
    return subprocess.run([os.path.join(BIN, name), *args], capture_output=True, text=True, cwd=cwd)


def test_metadata_against_the_zoo_schema(zoo_bundle, tmp_path):
    meta = os.path.join(zoo_bundle, "configs", "metadata.json")
    schema = os.path.join(zoo_bundle, "eval", "schema.json")
    verify_metadata(meta_file=meta, filepath=schema)  # as ci/verify_bundle.py's verify_metadata_format
    content = json.load(open(meta))
    assert content["version"] in content["changelog"]
    assert content["references"][0].startswith("Liu L, Fan X, Zhang C, Dai J, Xie Y, Liang X.")
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps({k: v for k, v in content.items() if k != "network_data_format"}))
    with pytest.raises(Exception, match="network_data_format"):  # the check can fail
        verify_metadata(meta_file=str(broken), filepath=schema)


def test_network_shape_at_the_metadata_smallest_size(zoo_bundle):
    """verify_net_in_out with the Zoo's defaults: n = 1 in the metadata's spatial_shape."""
    shape = json.load(open(os.path.join(zoo_bundle, "configs", "metadata.json")))["network_data_format"]
    assert shape["inputs"]["image"]["spatial_shape"] == ["16*n"] * 3
    sys.path.insert(0, zoo_bundle)
    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=os.path.join(zoo_bundle, "configs", "metadata.json"),
            config_file=os.path.join(zoo_bundle, "configs", "inference.json"),
            bundle_root=zoo_bundle,
        )
    finally:
        sys.path.remove(zoo_bundle)


def test_torchscript_export_and_load_as_the_zoo_does(zoo_bundle):
    sys.path.insert(0, zoo_bundle)
    try:
        ckpt_export(
            net_id="network_def",
            filepath=os.path.join(zoo_bundle, "models", "verify_model.ts"),
            ckpt_file=os.path.join(zoo_bundle, "models", "model.pt"),
            meta_file=os.path.join(zoo_bundle, "configs", "metadata.json"),
            config_file=os.path.join(zoo_bundle, "configs", "inference.json"),
            bundle_root=zoo_bundle,
        )
    finally:
        sys.path.remove(zoo_bundle)
    shipped = torch.jit.load(os.path.join(zoo_bundle, "models", "model.ts"))
    exported = torch.jit.load(os.path.join(zoo_bundle, "models", "verify_model.ts"))
    x = torch.rand(1, 2, 32, 32, 32)
    with torch.no_grad():  # the shipped TorchScript is the shipped checkpoint
        assert (shipped(x) - exported(x)).abs().max() < 1e-5


@pytest.mark.parametrize(
    "workflow_type, configs",
    [("train", ["train.json"]), ("train", ["train.json", "evaluate.json"]), ("inference", ["inference.json"])],
)
def test_workflow_properties_without_data(zoo_bundle, workflow_type, configs):
    """create_workflow(...).check_properties() as ci/verify_bundle.py runs it, with dataset_dir the placeholder
    (no data there); running it then names the missing datalist."""
    sys.path.insert(0, zoo_bundle)
    try:
        workflow = create_workflow(
            workflow_type=workflow_type,
            config_file=[os.path.join(zoo_bundle, "configs", c) for c in configs],
            meta_file=os.path.join(zoo_bundle, "configs", "metadata.json"),
            logging_file=os.path.join(zoo_bundle, "configs", "logging.conf"),
            bundle_root=zoo_bundle,
        )
        assert not workflow.check_properties()
        with pytest.raises(Exception) as missing:
            workflow.run()
        assert "datalist not found" in str(missing.value) + str(missing.value.__cause__)
    finally:
        sys.path.remove(zoo_bundle)


def test_code_format_with_the_zoo_settings():
    """The bundle and its Zoo unit test, with black 24.10.0 (the newest black that leaves the Zoo's own tree as it
    is), isort and flake8 as the Zoo's format job runs them."""
    paths = [BUNDLE, os.path.join(ZOO, "test_brain_mri_pet_fusion.py")]
    black = _tool("black", "--config", os.path.join(ZOO, "zoo_black.toml"), "--skip-magic-trailing-comma",
                  "--check", *paths)
    assert black.returncode == 0, black.stderr
    isort = _tool("isort", "--settings-path", os.path.join(ZOO, "zoo_format.cfg"), "--check", *paths)
    assert isort.returncode == 0, isort.stdout + isort.stderr
    flake8 = _tool("flake8", "--config", os.path.join(ZOO, "zoo_format.cfg"), "--count", *paths)
    assert flake8.returncode == 0, flake8.stdout + flake8.stderr


def test_the_zoo_pre_commit_hooks_leave_the_bundle_unchanged(tmp_path):
    """pre-commit with the Zoo's hooks on the bundle as the Zoo holds it (weights in large_files.yml, not in git)."""
    repo = tmp_path / "model-zoo"
    _copy_bundle(repo / "models" / "brain_mri_pet_fusion", weights=False)
    shutil.copy(os.path.join(BUNDLE, "large_files.yml"), repo / "models" / "brain_mri_pet_fusion")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "PRE_COMMIT_HOME": str(tmp_path / "cache")}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"]):
        subprocess.run(git + cmd, cwd=repo, check=True)
    run = subprocess.run(
        [os.path.join(BIN, "pre-commit"), "run", "--all-files", "-c", os.path.join(ZOO, "pre-commit-config.yaml")],
        cwd=repo, capture_output=True, text=True, env=env,
    )
    changed = subprocess.run(git + ["diff", "--name-only"], cwd=repo, capture_output=True, text=True).stdout
    assert run.returncode == 0 and not changed.strip(), run.stdout + run.stderr + changed


def test_weights_list_zip_download_and_inference_into_output_dir(tiny_cohort, tmp_path):
    """large_files.yml matches the weights; the Zoo zip unpacks with monai.bundle download and fuses a datalist
    kept outside the dataset folder, every output inside output_dir and nothing written beside the inputs."""
    check = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "package_bundle.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    source = _copy_bundle(tmp_path / "source")
    pack = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "package_bundle.py"), "--bundle_dir", source,
                           "--output_dir", str(tmp_path / "dist")], capture_output=True, text=True)
    assert pack.returncode == 0, pack.stderr
    zip_path = tmp_path / "dist" / f"brain_mri_pet_fusion_v{json.load(open(os.path.join(BUNDLE, 'configs', 'metadata.json')))['version']}.zip"
    download(name="brain_mri_pet_fusion", bundle_dir=str(tmp_path / "downloaded"), url=zip_path.as_uri())
    bundle = tmp_path / "downloaded" / "brain_mri_pet_fusion"
    assert (bundle / "models" / "model.ts").is_file() and not (bundle / "large_files.yml").exists()

    datalist = json.load(open(os.path.join(tiny_cohort, "datalist.json")))
    for item in datalist["testing"]:
        item.update({k: os.path.join(tiny_cohort, item[k]) for k in ("mri", "pet")})
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    (elsewhere / "datalist.json").write_text(json.dumps(datalist))
    before = sorted(os.listdir(os.path.join(tiny_cohort, datalist["testing"][0]["id"])))
    out = tmp_path / "fused"
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--dataset_dir", str(elsewhere), "--output_dir", str(out)],
        cwd=bundle, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(bundle)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    item = datalist["testing"][0]
    fused = out / item["id"] / "mri_fused.nii.gz"
    assert nib.load(str(fused)).shape == nib.load(item["mri"]).shape
    assert sorted(os.listdir(os.path.join(tiny_cohort, item["id"]))) == before
