"""multi_gpu_train.json on two CPU processes (gloo) with torchrun."""

import json
import os
import shutil
import subprocess
import sys

from conftest import ROOT


def test_torchrun_two_processes_on_cpu(tiny_cohort, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(os.path.join(ROOT, "bundle"), bundle, ignore=shutil.ignore_patterns("eval", "models", "__pycache__"))
    # two validation subjects, one per rank (MONAI's DistributedSampler needs at least one each)
    datalist = json.load(open(os.path.join(tiny_cohort, "datalist.json")))
    datalist["validation"] = datalist["validation"] + datalist["testing"]
    for split in ("training", "validation", "testing"):
        for item in datalist[split]:
            item.update({k: os.path.join(tiny_cohort, item[k]) for k in ("mri", "pet")})
    data = tmp_path / "data"
    data.mkdir()
    (data / "datalist.json").write_text(json.dumps(datalist))
    configs = f"['{bundle}/configs/train.json','{bundle}/configs/multi_gpu_train.json']"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(data),
         "--max_epochs", "1", "--patch_size", "[32,32,32]", "--val_roi_size", "[32,32,32]",
         "--bundle_root", str(bundle), "--output_dir", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.path.isfile(bundle / "models" / "model.pt")
    assert "Epoch[1] Complete" in proc.stdout + proc.stderr
