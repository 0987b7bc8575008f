"""multi_gpu_train.json and multi_gpu_evaluate.json on two CPU processes (gloo) with torchrun."""

import json
import os
import shutil
import subprocess
import sys

from conftest import ROOT


def _torchrun(configs, *args, port):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "monai.bundle", "run", "--config_file", configs, *args],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})


def test_torchrun_two_processes_on_cpu(tiny_cohort, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(os.path.join(ROOT, "bundle"), bundle, ignore=shutil.ignore_patterns("eval", "models", "__pycache__"))
    # two validation subjects, one per rank (MONAI's DistributedSampler needs at least one each)
    datalist = json.load(open(os.path.join(tiny_cohort, "datalist.json")))
    datalist["validation"] = datalist["validation"] + datalist["testing"]
    datalist["testing"] = datalist["validation"]
    for split in ("training", "validation", "testing"):
        for item in datalist[split]:
            item.update({k: os.path.join(tiny_cohort, item[k]) for k in ("mri", "pet")})
    data = tmp_path / "data"
    data.mkdir()
    (data / "datalist.json").write_text(json.dumps(datalist))
    configs = f"['{bundle}/configs/train.json','{bundle}/configs/multi_gpu_train.json']"
    proc = _torchrun(configs, "--dataset_dir", str(data), "--max_epochs", "1", "--patch_size", "[32,32,32]",
                     "--val_roi_size", "[32,32,32]", "--bundle_root", str(bundle), "--output_dir", str(tmp_path / "eval"),
                     port=29517)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.path.isfile(bundle / "models" / "model.pt")
    assert "Epoch[1] Complete" in proc.stdout + proc.stderr

    # evaluation of the test split split over the two processes; rank 0 writes the metrics of both cases
    configs = (f"['{bundle}/configs/train.json','{bundle}/configs/evaluate.json',"
               f"'{bundle}/configs/multi_gpu_evaluate.json']")
    proc = _torchrun(configs, "--dataset_dir", str(data), "--val_roi_size", "[32,32,32]", "--bundle_root", str(bundle),
                     "--output_dir", str(tmp_path / "test_eval"), port=29518)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = (tmp_path / "test_eval" / "val_fusion_ssim_raw.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(datalist["testing"]), rows
