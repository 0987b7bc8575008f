"""The quality yardsticks: the objective gap (blend, network, per-subject optimum) and the trade-off fronts."""

import json
import math
import os

import torch
from conftest import run_script


def test_objective_pieces_on_a_known_case():
    from dcfb_eval.objective import best_global_blend, gap_closed, per_subject_optimum
    from scripts.losses import FusionLoss

    torch.manual_seed(0)
    sources = torch.rand(2, 24, 24, 24)
    # an L1 loss to the MRI only: the best blend is the MRI itself (w = 1) and the optimum cannot beat it
    loss = FusionLoss(ssim_weights=(0, 0), ncc_weights=(0, 0), l1_weights=(1, 0))
    w, value, _ = best_global_blend(loss, sources, 0.5)
    assert abs(w - 1.0) < 2e-3 and value < 2e-3
    # SSIM to both: the optimum is better than any blend, and converges
    loss = FusionLoss(ssim_weights=(1, 1), ncc_weights=(0, 0), l1_weights=(0, 0))
    w, value, blend = best_global_blend(loss, sources, 0.5)
    optimum = per_subject_optimum(loss, sources, 0.5, start=blend, max_iterations=400, progress=False)
    assert optimum.value < value and optimum.converged and optimum.iterations < 400
    assert gap_closed(value, value, optimum.value) == 0.0 and gap_closed(value, optimum.value, optimum.value) == 1.0


def test_gap_and_fronts_scripts_on_a_tiny_split(tiny_cohort, app_bundle, tmp_path):
    model = os.path.join(app_bundle, "models", "model.ts")
    gap = run_script("fusion_eval.py", "gap", "--dataset_dir", tiny_cohort, "--model", model, "--bundle_dir", app_bundle,
                     "--crop", "24", "--max_iterations", "60", "--output", str(tmp_path / "gap.json"))
    result = json.loads((tmp_path / "gap.json").read_text())
    case = result["cases"][0]
    assert case["objective"]["optimum"] <= case["objective"]["blend"] and case["cube"] == [24, 24, 24]
    assert "gap closed" in gap.stdout and set(result["mean"]) == {"gap_closed", "blend", "network", "optimum"}
    # a second network judged against the same blends and optima, without optimising again; with one copy of the
    # network fitted to all the split's cubes together
    again = run_script("fusion_eval.py", "gap", "--dataset_dir", tiny_cohort, "--model", model, "--bundle_dir",
                       app_bundle, "--crop", "24", "--reuse", str(tmp_path / "gap.json"), "--fit_steps", "2",
                       "--fit_jointly", "--save_fitted", str(tmp_path / "fitted.ts"),
                       "--output", str(tmp_path / "gap2.json"))
    second = json.loads((tmp_path / "gap2.json").read_text())
    reused = second["cases"][0]
    assert "reused" in again.stdout and reused["reused"]
    assert {k: reused["objective"][k] for k in case["objective"]} == case["objective"]
    assert second["fit_jointly"]
    assert all("fitted" in row and math.isfinite(row["fitted_gap_closed"]) for row in second["cases"])
    assert "fitted_gap_closed" in second["mean"] and "network fitted to these cubes" in again.stdout
    # the fitted network, saved, is a model the tool judges like any other
    judged = run_script("fusion_eval.py", "gap", "--dataset_dir", tiny_cohort, "--model", str(tmp_path / "fitted.ts"),
                        "--bundle_dir", app_bundle, "--crop", "24", "--reuse", str(tmp_path / "gap.json"))
    assert "gap closed" in judged.stdout
    other_crop = run_script("fusion_eval.py", "gap", "--dataset_dir", tiny_cohort, "--model", model, "--bundle_dir",
                            app_bundle, "--crop", "16", "--reuse", str(tmp_path / "gap.json"), check=False)
    assert other_crop.returncode == 2 and "--reuse" in other_crop.stderr

    run_script("fusion_eval.py", "fronts", "--dataset_dir", tiny_cohort, "--split", "testing", "--bundle_dir", app_bundle,
               "--model", f"net={model}", "--emphases", "0.2,0.8", "--shares", "0,0.5,1",
               "--output_dir", str(tmp_path / "fronts"))
    summary = json.loads((tmp_path / "fronts" / "summary.json").read_text())["methods"]
    assert set(summary) == {"blend@0", "blend@0.5", "blend@1", "net@0.2", "net@0.8"}
    # the seeded FiLM makes lambda matter, and the picture and the table are written
    assert summary["net@0.2"]["ssim"]["mean"] != summary["net@0.8"]["ssim"]["mean"]
    assert (tmp_path / "fronts" / "fronts.png").stat().st_size > 10000
    assert "Default by the rule" in (tmp_path / "fronts" / "fronts.md").read_text()
    # another family added to those fronts: the earlier methods are read back, not scored again
    run_script("fusion_eval.py", "fronts", "--dataset_dir", tiny_cohort, "--split", "testing", "--bundle_dir", app_bundle,
               "--model", f"other={model}", "--emphases", "0.5", "--shares", "", "--reuse", str(tmp_path / "fronts"),
               "--output_dir", str(tmp_path / "fronts2"))
    merged = json.loads((tmp_path / "fronts2" / "summary.json").read_text())["methods"]
    assert set(merged) == set(summary) | {"other@0.5"} and merged["net@0.2"] == summary["net@0.2"]
    assert "### other" in (tmp_path / "fronts2" / "fronts.md").read_text()
    bad = run_script("fusion_eval.py", "fronts", "--dataset_dir", tiny_cohort, "--model", f"net={model}", "--emphases", "2",
                     "--output_dir", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "--emphases" in bad.stderr


def test_views_draw_one_network_at_several_emphases(tiny_cohort, app_bundle, tmp_path):
    from PIL import Image

    model = os.path.join(app_bundle, "models", "model.ts")
    proc = run_script("fusion_eval.py", "views", "--dataset_dir", tiny_cohort, "--bundle_dir", app_bundle,
                      "--split", "training", "--models", f"net@0.2={model},net@0.8={model}", "--overlay", "net@0.8",
                      "--suffix", "_x", "--output_dir", str(tmp_path / "views"))
    written = sorted(p.name for p in (tmp_path / "views").iterdir())
    assert written and all(n.startswith("triplanar_") and n.endswith("_x.png") for n in written), written
    printed = [line for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert sorted(os.path.basename(p) for p in printed) == written and all(os.path.isfile(p) for p in printed)
    # sources, the two emphases and the overlay: four columns side by side
    width, height = Image.open(tmp_path / "views" / written[0]).size
    assert width > 1.5 * height
    missing = run_script("fusion_eval.py", "views", "--dataset_dir", tiny_cohort, "--bundle_dir", app_bundle,
                         "--models", "net=/nonexistent.ts", "--output_dir", str(tmp_path / "y"), check=False)
    assert missing.returncode == 2 and "/nonexistent.ts" in missing.stderr


def test_seeds_groups_models_and_reports_mean_spread_and_difference(tmp_path):
    def method(ssim, r):
        return {"n": 2, "ssim": {"mean": ssim, "std": 0.0}, "regional_corr": {"mean": r, "std": 0.0}}

    methods = {"a1@0.5": method(0.60, 0.90), "a2@0.5": method(0.62, 0.92), "b1@0.5": method(0.50, 0.95),
               "b2@0.5": method(0.54, 0.97), "blend@0.5": method(0.55, 0.9)}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"split": "testing", "cases": 2, "methods": methods}))
    out = tmp_path / "seeds.md"
    proc = run_script("fusion_eval.py", "seeds", "--summary", str(path), "--groups", "3D=a1,a2;2D=b1,b2",
                      "--output", str(out))
    text = out.read_text()
    assert "| 3D | 0.5 | 0.6100 ± 0.0141 | 0.9100 ± 0.0141 |" in text, text
    assert "| 0.5 | +0.0900 (±0.0283) | -0.0500 (±0.0141) |" in text, text
    assert proc.returncode == 0
