"""The project's quality number: how much of the objective's gap between the best global blend of the sources and
the per-subject optimum a network closes, with the metrics of all three, per case of a datalist split.

    .venv/bin/python scripts/fusion_eval.py gap --dataset_dir data/cohort --split testing \
        --model bundle/models/model.ts --pet_emphasis 0.5 --crop 96 --output runs/gap/gap.json

For each case, on a cube of ``crop`` voxels at the centre of the head on the MRI's own grid (whole volumes take
minutes per optimisation step on a CPU): the objective (``bundle/configs/train.json``'s loss at lambda =
``pet_emphasis``) of the best global blend w * MRI + (1 - w) * PET (w optimised per case), of the network (one
pass over the whole volume, then the same cube) and of the optimum (F optimised directly until the objective
falls by less than 0.02 % over 50 steps); the fraction of the gap closed; SSIM, VIF, PSNR, regional r and
contrast kept of each.
"""

from __future__ import annotations

import json
import os
import time

import nibabel as nib
import numpy as np
import torch
from tqdm import trange

from .comparison import BundlePipeline
from .objective import best_global_blend, gap_closed, objective_value, per_subject_optimum

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scores(fm, fused, sources, mask, regions) -> dict:
    corr, kept = fm.regional_pattern(fused, sources[1], regions, range(1, 9), range(9, 13))
    return {
        "ssim": float(sum(fm.masked_ssim(fused, s, mask) for s in sources) / 2),
        "vif": float(fm.fusion_visual_information_fidelity(fused, sources[0], sources[1], mask)),
        "psnr": float(sum(fm.masked_psnr(fused, s, mask) for s in sources) / 2),
        "regional_corr": float(corr),
        "contrast_kept": float(kept),
    }


def fit_to_cases(model: str, loss_fn, cubes: list[torch.Tensor], pet_emphasis: float, steps: int,
                 save: str = "") -> list[torch.Tensor]:
    """A fresh copy of the TorchScript ``model`` trained on the ``cubes`` (each [2, *S]) alone, one cube per Adam
    step in turn, ``steps`` steps per cube; returns its F [*S] on each cube (with ``save``, also saved there as
    TorchScript, e.g. to judge it on other cases)."""
    network = torch.jit.load(model, map_location="cpu").train()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-4)
    lam = torch.tensor([float(pet_emphasis)])
    desc = "fitting the network to the case" if len(cubes) == 1 else f"fitting the network to {len(cubes)} cases"
    for step in trange(steps * len(cubes), desc=desc, unit="step", leave=False):
        x = cubes[step % len(cubes)][None]
        optimizer.zero_grad()
        loss_fn(network(x, lam), x, lam).backward()
        optimizer.step()
    network.eval()
    if save:
        os.makedirs(os.path.dirname(os.path.abspath(save)), exist_ok=True)
        torch.jit.save(network, save)
    with torch.no_grad():
        return [network(x[None], lam)[0, 0].clamp(0, 1) for x in cubes]


def load_reusable(path: str, split: str, pet_emphasis: float, crop: int) -> dict:
    """The blend and optimum rows of an earlier gap JSON, by case, if it was run with the same split, lambda and
    crop (otherwise ValueError: its optimum would be another objective's, or another cube's)."""
    with open(path) as f:
        earlier = json.load(f)
    same = (earlier.get("split"), float(earlier.get("pet_emphasis", -1)), int(earlier.get("crop", -1)))
    if same != (split, float(pet_emphasis), int(crop)):
        raise ValueError(f"--reuse {path}: it was run with split/lambda/crop {same}, not "
                         f"{(split, float(pet_emphasis), int(crop))}")
    return {row["case"]: row for row in earlier["cases"]}


def main(dataset_dir: str, model: str, split: str = "testing", pet_emphasis: float = 0.5, crop: int = 96,
         spatial_dims: int = 3, fit_steps: int = 0, fit_jointly: bool = False, save_fitted: str = "", windows: int = 0,
         max_cases: int = 0, max_iterations: int = 2000, output: str = "", reuse: str = "",
         bundle_dir: str = os.path.join(ROOT, "bundle")) -> dict:
    """Print and return (and with ``output``, write as JSON) the per-case gap table and its means. ``spatial_dims``
    2: ``model`` is a 2D network, applied slice by slice. ``fit_steps`` > 0 adds a fourth row, the architecture's
    capacity: a copy of the (3D) network trained on the case's cube alone for that many Adam steps (learning rate
    2e-4, as the bundle trains) at the same lambda; near the optimum means the network can express what the
    objective asks for, and the limit is in the training, not in the architecture. ``fit_jointly``: one copy trained
    on all the cases' cubes together instead (``fit_steps`` steps per case, one cube per step in turn): whether the
    network can fit several subjects at once, between one subject and the whole training split; ``save_fitted``: where
    to save that jointly fitted network (TorchScript). ``reuse``: an earlier gap JSON
    of the same split, lambda and crop, whose best blends and optima are taken instead of recomputed (the
    optimisation is most of the time; networks compared this way share the same optimum exactly)."""
    if not os.path.isfile(model):
        raise FileNotFoundError(f"{model}: model file not found")
    if not 0.0 <= float(pet_emphasis) <= 1.0:
        raise ValueError(f"pet_emphasis must be in [0, 1], got {pet_emphasis}")
    pipeline = BundlePipeline(bundle_dir, windows)
    from monai.bundle import ConfigParser
    from scripts import fusion_measures as fm
    from scripts.data import load_fusion_datalist

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "train.json"))
    loss_fn = parser.get_parsed_content("loss")
    network = pipeline.torchscript_method(model, int(spatial_dims), pet_emphasis=pet_emphasis)
    items = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)
    items = items[:max_cases] if max_cases else items
    earlier = load_reusable(reuse, split, pet_emphasis, crop) if reuse else {}
    rows, cases = [], []

    def add_fitted(row, fitted, sources, mask, regions) -> None:
        row["objective"]["fitted"] = objective_value(loss_fn, fitted, sources, pet_emphasis)
        row["fitted"] = _scores(fm, fitted, sources, mask, regions)
        row["fitted_gap_closed"] = gap_closed(row["objective"]["blend"], row["objective"]["fitted"],
                                              row["objective"]["optimum"])

    def print_rows(row, only_fitted: bool = False) -> None:
        if "fitted" in row:
            print(f"    {row['case']}: network fitted to {'these cubes' if fit_jointly else 'this cube'} "
                  f"({fit_steps} steps{' per cube' if fit_jointly else ''}): objective "
                  f"{row['objective']['fitted']:.4f}, gap closed {row['fitted_gap_closed']:.1%}", flush=True)
        for name in ("fitted",) if only_fitted else ("blend", "network", "optimum", "fitted"):
            if name not in row:
                continue
            sc = row[name]
            print(f"    {name:>8}: SSIM {sc['ssim']:.4f}  VIF {sc['vif']:.4f}  PSNR {sc['psnr']:.2f}  "
                  f"r {sc['regional_corr']:.3f}  contrast kept {sc['contrast_kept']:.3f}", flush=True)

    for item in items:
        if not item.get("regions"):
            raise ValueError(f"{item['id']}: no regions in the datalist (scripts/generate_cohort.py writes them)")
        start = time.perf_counter()
        data = pipeline.preprocessing({"mri": item["mri"], "pet": item["pet"]})
        fused_full, sources_full = pipeline.to_mri_grid(
            data, network(data["image"][0].as_tensor(), data["image"][1].as_tensor()).clamp(0, 1))
        sources_full = sources_full[0].float()
        # the cube: centred on the head's bounding box, at most crop voxels a side
        centres = [(b.start + b.stop) // 2 for b in pipeline.head_box(sources_full, margin=0)]
        starts = [min(max(c - crop // 2, 0), max(n - crop, 0)) for c, n in zip(centres, sources_full.shape[1:])]
        cube = tuple(slice(s, min(s + crop, n)) for s, n in zip(starts, sources_full.shape[1:]))
        sources = sources_full[(slice(None), *cube)].contiguous()
        net = fused_full[0, 0][cube].float().contiguous()
        regions = torch.as_tensor(np.asarray(nib.load(item["regions"]).dataobj))[cube]
        mask = pipeline.head_mask(sources)
        net_value = objective_value(loss_fn, net, sources, pet_emphasis)
        fitted = (fit_to_cases(model, loss_fn, [sources], pet_emphasis, int(fit_steps))[0]
                  if fit_steps and not fit_jointly else None)
        cube_shape = [c.stop - c.start for c in cube]
        known = earlier.get(item["id"])
        if earlier and (known is None or known["cube"] != cube_shape):
            raise ValueError(f"--reuse {reuse}: no row for {item['id']} on a cube of {cube_shape}")
        if known:
            w, blend_value = known["blend_share"], known["objective"]["blend"]
            optimum_value = known["objective"]["optimum"]
            found = {k: known[k] for k in ("optimum_iterations", "optimum_converged", "optimum_last_window_gain")}
            found.update(blend=known["blend"], optimum=known["optimum"])
        else:
            w, blend_value, blend = best_global_blend(loss_fn, sources, pet_emphasis)
            optimum = per_subject_optimum(loss_fn, sources, pet_emphasis, start=blend, max_iterations=max_iterations)
            optimum_value = optimum.value
            found = {"optimum_iterations": optimum.iterations, "optimum_converged": optimum.converged,
                     "optimum_last_window_gain": optimum.last_window_gain,
                     "blend": _scores(fm, blend, sources, mask, regions),
                     "optimum": _scores(fm, optimum.fused, sources, mask, regions)}
        row = {
            "case": item["id"], "pattern": item.get("pattern", ""), "cube": cube_shape,
            "blend_share": w, "objective": {"blend": blend_value, "network": net_value, "optimum": optimum_value},
            "gap_closed": gap_closed(blend_value, net_value, optimum_value),
            "optimum_iterations": found["optimum_iterations"], "optimum_converged": found["optimum_converged"],
            "optimum_last_window_gain": found["optimum_last_window_gain"],
            "blend": found["blend"], "network": _scores(fm, net, sources, mask, regions),
            "optimum": found["optimum"], "seconds": time.perf_counter() - start, "reused": bool(known),
        }
        if fitted is not None:
            add_fitted(row, fitted, sources, mask, regions)
        if fit_steps and fit_jointly:
            cases.append((sources, mask, regions))
        rows.append(row)
        print(f"{row['case']}: objective blend {blend_value:.4f} (w {w:.3f})  network {net_value:.4f}  optimum "
              f"{optimum_value:.4f} ({row['optimum_iterations']} steps, "
              f"{'converged' if row['optimum_converged'] else 'NOT converged'}{', reused' if known else ''})"
              f"  gap closed {row['gap_closed']:.1%}", flush=True)
        print_rows(row)
    if fit_steps and fit_jointly:
        fitted_all = fit_to_cases(model, loss_fn, [c[0] for c in cases], pet_emphasis, int(fit_steps), save_fitted)
        print(f"one network fitted to the {len(rows)} cubes together ({fit_steps} steps per cube):")
        for row, fitted, (sources, mask, regions) in zip(rows, fitted_all, cases):
            add_fitted(row, fitted, sources, mask, regions)
            print_rows(row, only_fitted=True)
    mean = {"gap_closed": float(np.mean([r["gap_closed"] for r in rows]))}
    if fit_steps:
        mean["fitted_gap_closed"] = float(np.mean([r["fitted_gap_closed"] for r in rows]))
    for name in ("blend", "network", "optimum") + (("fitted",) if fit_steps else ()):
        mean[name] = {k: float(np.mean([r[name][k] for r in rows])) for k in rows[0][name]}
        mean[name]["objective"] = float(np.mean([r["objective"][name] for r in rows]))
    print(f"mean over {len(rows)} case(s): gap closed {mean['gap_closed']:.1%}; SSIM blend {mean['blend']['ssim']:.4f}, "
          f"network {mean['network']['ssim']:.4f}, optimum {mean['optimum']['ssim']:.4f}")
    result = {"model": model, "spatial_dims": int(spatial_dims), "split": split, "pet_emphasis": pet_emphasis,
              "crop": crop, "fit_steps": int(fit_steps), "fit_jointly": bool(fit_jointly), "cases": rows, "mean": mean}
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            json.dump(result, f, indent=2)
    return result

