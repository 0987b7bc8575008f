"""Classical baselines: defining properties on small volumes."""

import json

import pytest
import torch
from monai.transforms import GaussianSmooth

from dcfb_eval.classical_fusion import CLASSICAL_METHODS, pca_fusion


def volume(seed, shape=(20, 24, 18)):
    g = torch.Generator().manual_seed(seed)
    x = GaussianSmooth(sigma=1.5)(torch.rand((1, *shape), generator=g))[0]
    return (x - x.min()) / (x.max() - x.min())


A, B = volume(3), volume(4)


@pytest.mark.parametrize("name", sorted(CLASSICAL_METHODS))
def test_same_source_twice_gives_it_back_and_output_in_range(name):
    method = CLASSICAL_METHODS[name]
    assert torch.allclose(method(A, A), A, atol=1e-5)
    fused = method(A, B)
    assert fused.shape == A.shape and fused.min() >= 0 and fused.max() <= 1
    assert torch.allclose(fused, method(B, A), atol=1e-5) or name == "pca"  # PCA weights follow the data


def test_pca_weights_favour_the_source_with_more_variance():
    flat = torch.full_like(A, 0.5) + 0.01 * B
    fused = pca_fusion(A, flat)
    assert torch.corrcoef(torch.stack([fused.flatten(), A.flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize("name", ["laplacian_pyramid", "wavelet"])
def test_multiscale_fusion_keeps_detail_of_either_source(name):
    a, b = torch.zeros(32, 32, 32), torch.zeros(32, 32, 32)
    a[8:10, 8:10, 8:10] = 1.0   # a small bright detail only in A
    b[20:22, 20:22, 20:22] = 1.0  # and one only in B
    fused = CLASSICAL_METHODS[name](a, b)
    assert fused[8:10, 8:10, 8:10].mean() > 0.7 and fused[20:22, 20:22, 20:22].mean() > 0.7
    assert average_of(a, b)[8:10, 8:10, 8:10].mean() == pytest.approx(0.5)


def average_of(a, b):
    return CLASSICAL_METHODS["average"](a, b)


def test_evaluate_methods_scores_every_method_on_a_split(tiny_cohort, app_bundle, tmp_path):
    import csv
    import json
    import os

    from conftest import run_script

    import sys

    sys.path.insert(0, app_bundle)
    try:
        from scripts.dcfb_net import DCFBNet

        torch.manual_seed(0)
        torch.jit.script(DCFBNet(spatial_dims=2).eval()).save(str(tmp_path / "model_2d.ts"))
    finally:
        sys.path.remove(app_bundle)
    run_script("fusion_eval.py", "compare", "--dataset_dir", tiny_cohort, "--split", "testing", "--bundle_dir", app_bundle,
               "--models", f"dcfb_3d={os.path.join(app_bundle, 'models', 'model.ts')}",
               "--models_2d", f"dcfb_2d={tmp_path / 'model_2d.ts'}", "--output_dir", str(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "per_case.csv")))
    assert sorted({r["method"] for r in rows}) == sorted([*CLASSICAL_METHODS, "dcfb_3d", "dcfb_2d"])
    for row in rows:
        for key in ("psnr", "ssim", "en", "sd", "sf", "ag", "mi", "nmi", "fmi", "scd", "vif", "qabf", "regional_corr"):
            assert float(row[key]) == float(row[key]), (row["method"], key)  # not NaN
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["cases"] == 1 and summary["methods"]["average"]["psnr"]["mean"] > 10

    # a model added to the comparison later: the other methods' rows are kept, not scored again
    run_script("fusion_eval.py", "compare", "--dataset_dir", tiny_cohort, "--split", "testing", "--bundle_dir", app_bundle,
               "--baselines", "average", "--models", f"dcfb_again={os.path.join(app_bundle, 'models', 'model.ts')}",
               "--output_dir", str(tmp_path), "--merge", "--metrics", "psnr,ssim")
    merged = list(csv.DictReader(open(tmp_path / "per_case.csv")))
    assert sorted(r["method"] for r in merged) == sorted([*CLASSICAL_METHODS, "dcfb_3d", "dcfb_2d", "dcfb_again"])
    again = {r["method"]: r for r in merged}
    assert float(again["dcfb_again"]["ssim"]) == pytest.approx(float(again["dcfb_3d"]["ssim"]), abs=1e-6)
    assert again["dcfb_again"]["qabf"] == "" and again["dcfb_3d"]["qabf"] != ""  # only the metrics asked for
    assert set(json.load(open(tmp_path / "summary.json"))["methods"]) == {r["method"] for r in merged}
    bad = run_script("fusion_eval.py", "compare", "--dataset_dir", tiny_cohort, "--bundle_dir", app_bundle,
                     "--baselines", "median", "--output_dir", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2 and "median" in bad.stderr
    bad = run_script("fusion_eval.py", "compare", "--dataset_dir", tiny_cohort, "--bundle_dir", app_bundle,
                     "--metrics", "psnr,msssim", "--output_dir", str(tmp_path / "bad"), check=False)
    assert bad.returncode == 2 and "msssim" in bad.stderr and not (tmp_path / "bad" / "per_case.csv").exists()

    log = tmp_path / "train.log"
    log.write_text("Epoch: 1/1, Iter: 1/2 -- train_loss: 2.5\nEpoch: 1/1, Iter: 2/2 -- train_loss: 2.0\n"
                   "Epoch[1] Metrics -- val_fusion_psnr: 20.0 val_fusion_ssim: 0.5\n")
    comparison = tmp_path / "comparison"
    for run, seconds in (("dcfb_again", "600"), ("not_scored", "60")):
        (comparison / run).mkdir(parents=True)
        (comparison / run / "seconds").write_text(seconds)
    second_stage = tmp_path / "second_stage"
    (second_stage / "dcfb_3d").mkdir(parents=True)
    (second_stage / "dcfb_3d" / "seconds").write_text("120")
    run_script("fusion_eval.py", "report", "--eval_dir", str(tmp_path), "--dataset_dir", tiny_cohort, "--bundle_dir", app_bundle,
               "--models", f"dcfb_3d={os.path.join(app_bundle, 'models', 'model.ts')}", "--train_log", str(log),
               "--output_dir", str(tmp_path / "docs"), "--comparison_dir", f"{comparison},{second_stage}")
    report = (tmp_path / "docs" / "report.md").read_text()
    assert "| dcfb_3d |" in report and "| average |" in report and "How to read" in report
    same_budget = report[report.index("## Same training budget"):report.index("![metrics]")]
    first, second = same_budget.split(f"`{second_stage}`")
    assert "| dcfb_again | 10 |" in first and "not_scored" not in same_budget
    assert "| dcfb_3d | 2 |" in second and "dcfb_again" not in second
    pictures = sorted(os.listdir(tmp_path / "docs" / "images"))
    assert "metrics.png" in pictures and "training_curve.png" in pictures
    assert any(p.startswith("triplanar_") for p in pictures)
    # a model file that is not there: a clear error before anything is written
    missing = run_script("fusion_eval.py", "report", "--eval_dir", str(tmp_path), "--dataset_dir", tiny_cohort,
                         "--bundle_dir", app_bundle, "--models", "gone=/nonexistent/model.ts",
                         "--output_dir", str(tmp_path / "docs_missing"), check=False)
    assert missing.returncode == 2 and "/nonexistent/model.ts" in missing.stderr
    assert not (tmp_path / "docs_missing").exists()


def test_loss_optimum_shows_where_each_loss_pulls(tiny_cohort):
    import re

    from conftest import run_script

    proc = run_script("fusion_eval.py", "optimum", "--dataset_dir", tiny_cohort, "--split", "testing", "--case", "0",
                      "--losses", "paper,bundle", "--iterations", "20", "--crop", "32")
    rows = {}
    for line in proc.stdout.splitlines():
        found = re.match(r"\s*(.+?): PSNR\s+(\S+)\s+SSIM (\S+) \(MRI (\S+), PET (\S+)\)\s+regional r (\S+)", line)
        if found:
            rows[found.group(1)] = [float(v) for v in found.groups()[1:]]
    assert set(rows) == {"average", "mri", "optimum of paper", "optimum of bundle"}, proc.stdout
    assert rows["mri"][2] == pytest.approx(1.0)
    paper, bundle = rows["optimum of paper"], rows["optimum of bundle"]
    assert paper[2] > paper[3]  # the paper's 2:1 weights pull F towards the MRI
    assert bundle[3] > paper[3]  # the bundle's loss keeps more of the PET
    bad = run_script("fusion_eval.py", "optimum", "--dataset_dir", tiny_cohort, "--losses", "mse", check=False)
    assert bad.returncode == 2 and "mse" in bad.stderr


def test_training_logs_of_two_stages_follow_one_another(tmp_path):
    from dcfb_eval.report import read_training_logs

    first, second = tmp_path / "stage1.log", tmp_path / "stage2.log"
    first.write_text("Epoch: 1/6, Iter: 1/2 -- train_loss: 2.5\nEpoch[6] Metrics -- val_fusion_psnr: 20.0 "
                     "val_fusion_ssim: 0.5\n")
    second.write_text("Epoch: 1/3, Iter: 1/2 -- train_loss: -0.5\nEpoch[3] Metrics -- val_fusion_psnr: 21.0 "
                      "val_fusion_ssim: 0.6\n")
    losses, vals = read_training_logs([str(first), str(second)])
    assert losses == [2.5, -0.5]
    assert vals == [(6, 20.0, 0.5), (9, 21.0, 0.6)]


def test_tradeoff_plot_of_a_weight_sweep(tmp_path):
    from conftest import run_script

    def summary(name, **means):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"methods": {name: {k: {"mean": v, "std": 0.0} for k, v in means.items()}}}))
        return path

    a = summary("net3d", psnr=19.5, ssim=0.645, vif=0.51, qabf=0.44)
    b = summary("net2d", psnr=19.6, ssim=0.638, vif=0.55)
    picture = tmp_path / "tradeoff.png"
    proc = run_script("fusion_eval.py", "tradeoff", "--output", str(picture),
                      "--points", f"3D@0.1={a}:net3d;2D@0.1={b}:net2d")
    assert picture.is_file() and picture.stat().st_size > 1000
    assert "| 3D | 0.1 | 19.500 | 0.645 | 0.510 | 0.440 |  |  |" in proc.stdout
    assert "| 2D | 0.1 | 19.600 | 0.638 | 0.550 |  |" in proc.stdout
    missing = run_script("fusion_eval.py", "tradeoff", "--output", str(picture), "--points", f"3D@0={a}:other", check=False)
    assert missing.returncode == 2 and "no method 'other'" in missing.stderr
    bad = run_script("fusion_eval.py", "tradeoff", "--output", str(picture), "--points", "3D=nothing", check=False)
    assert bad.returncode == 2 and "series@weight=summary.json:method" in bad.stderr
    unknown = run_script("fusion_eval.py", "tradeoff", "--output", str(picture), "--points", f"3D@0={a}:net3d", "--y", "msssim",
                         check=False)
    assert unknown.returncode == 2 and "msssim" in unknown.stderr
    unscored = run_script("fusion_eval.py", "tradeoff", "--output", str(picture), "--points", f"2D@0={b}:net2d", "--y", "qabf",
                          check=False)
    assert unscored.returncode == 2 and "no ssim or no qabf" in unscored.stderr


def test_blend_sweep_shows_psnr_and_vif_lowest_near_the_balance_ssim_prefers(tiny_cohort):
    """Global blends w * MRI + (1 - w) * PET: PSNR (mean of the two) and VIF (summed over the sources) are higher
    at either end than at w = 0.5, and SSIM (mean of the two) is higher at w = 0.5 than at either end."""
    from conftest import run_script

    proc = run_script("fusion_eval.py", "blends", "--dataset_dir", tiny_cohort, "--split", "testing", "--max_cases", "1",
                      "--weights", "0,0.5,0.95", "--metrics", "psnr,ssim,vif")
    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("| 0")}
    assert set(rows) == {"0", "0.5", "0.95"}
    for end in ("0", "0.95"):
        assert rows[end][0] > rows["0.5"][0] and rows[end][2] > rows["0.5"][2]
        assert rows[end][1] < rows["0.5"][1]
    bad = run_script("fusion_eval.py", "blends", "--dataset_dir", tiny_cohort, "--weights", "0.5,2", check=False)
    assert bad.returncode == 2 and "[0, 1]" in bad.stderr
    bad = run_script("fusion_eval.py", "blends", "--dataset_dir", tiny_cohort, "--metrics", "psnr,msssim", check=False)
    assert bad.returncode == 2 and "msssim" in bad.stderr


def test_source_breakdown_places_the_average_at_the_balance(tiny_cohort):
    """Per-source scores: plain averaging is the global blend w = 0.5 (nothing off the blend, equal PSNR against
    either source); the maximum is not a global blend; unknown input is exit 2."""
    from conftest import run_script

    proc = run_script("fusion_eval.py", "breakdown", "--dataset_dir", tiny_cohort, "--split", "testing",
                      "--baselines", "average,maximum")
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| method"))
    columns = [c.strip() for c in header.split("|")[2:-1]]
    rows = {line.split("|")[1].strip(): dict(zip(columns, (float(v) for v in line.split("|")[2:-1])))
            for line in proc.stdout.splitlines() if line.startswith("| average") or line.startswith("| maximum")}
    average, maximum = rows["average"], rows["maximum"]
    assert average["mri_share"] == pytest.approx(0.5, abs=1e-3) and average["off_blend"] < 1e-4
    assert average["psnr_mri"] == pytest.approx(average["psnr_pet"], abs=0.01)
    assert maximum["off_blend"] > 0.01
    for row in rows.values():
        assert all(0 <= row[c] <= 1 for c in ("ssim_mri", "ssim_pet")) and row["vif_mri"] > 0 and row["vif_pet"] > 0
    share = run_script("fusion_eval.py", "breakdown", "--dataset_dir", tiny_cohort, "--split", "testing",
                       "--baselines", "average", "--measures", "share").stdout
    assert "| method | mri_share | mri_share_sd | off_blend |" in share and "| average | 0.5000 | 0.0000 |" in share, share
    bad = run_script("fusion_eval.py", "breakdown", "--dataset_dir", tiny_cohort, "--measures", "vif", check=False)
    assert bad.returncode == 2 and "--measures" in bad.stderr
    bad = run_script("fusion_eval.py", "breakdown", "--dataset_dir", tiny_cohort, "--models", "x=/nonexistent.ts", check=False)
    assert bad.returncode == 2 and "/nonexistent.ts" in bad.stderr
    bad = run_script("fusion_eval.py", "breakdown", "--dataset_dir", tiny_cohort, check=False)
    assert bad.returncode == 2 and "nothing to score" in bad.stderr
