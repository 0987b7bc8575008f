"""What fused image does a loss ask for? Optimise F itself (no network) under a loss on one subject and
score it: the best any network trained on that loss can do, and where the loss pulls.

    .venv/bin/python scripts/fusion_eval.py optimum --dataset_dir data/cohort --split testing --case 0 \
        --losses paper,bundle --iterations 60

``paper`` is ``FusionLoss()`` (the paper's 2:1:2:1:2:1 weights), ``bundle`` the loss of
``bundle/configs/train.json``. F starts at the average of the sources and is optimised with Adam on a central
cube of ``crop`` voxels (whole volumes take minutes per iteration on a CPU); it is scored on the same cube.
"""

from __future__ import annotations

import os
import time

import nibabel as nib
import numpy as np
import torch
from tqdm import trange

from .comparison import BundlePipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def optimise(loss_fn, sources: torch.Tensor, iterations: int, lr: float = 0.02) -> torch.Tensor:
    target = sources[None]
    fused = sources.mean(0)[None, None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([fused], lr=lr)
    for _ in trange(iterations, desc="optimising F", unit="step", leave=False):
        optimizer.zero_grad()
        loss_fn(fused, target).backward()
        optimizer.step()
        with torch.no_grad():
            fused.clamp_(0, 1)
    return fused.detach()[0, 0]


def main(dataset_dir: str, split: str = "testing", case: int = 0, losses: str = "paper,bundle",
         iterations: int = 60, crop: int = 112, bundle_dir: str = os.path.join(ROOT, "bundle")) -> None:
    """Print PSNR, SSIM (each source and mean), regional r and contrast kept of the average, the MRI and the
    optimum of each of ``losses`` on test subject number ``case``."""
    pipeline = BundlePipeline(bundle_dir)
    from monai.bundle import ConfigParser
    from scripts import fusion_measures as fm
    from scripts.data import load_fusion_datalist
    from scripts.losses import FusionLoss

    item = load_fusion_datalist(os.path.join(dataset_dir, "datalist.json"), split, dataset_dir)[case]
    if not item.get("regions"):
        raise ValueError(f"{item['id']}: no regions in the datalist (scripts/generate_cohort.py writes them)")
    # the sources as the network sees them (the bundle's preprocessing), back on the MRI's grid where the
    # cohort's regions lie
    data = pipeline.preprocessing({"mri": item["mri"], "pet": item["pet"]})
    sources = pipeline.to_mri_grid(data, data["image"][0].as_tensor())[1][0].float()
    regions = torch.as_tensor(np.asarray(nib.load(item["regions"]).dataobj))
    cube = tuple(slice(max((n - crop) // 2, 0), max((n - crop) // 2, 0) + min(crop, n)) for n in sources.shape[1:])
    sources, regions = sources[(slice(None), *cube)].contiguous(), regions[cube]
    mask = pipeline.head_mask(sources)
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "train.json"))
    known = {"paper": FusionLoss, "bundle": lambda: parser.get_parsed_content("loss")}
    candidates = {"average": None, "mri": None}
    for name in (losses.split(",") if isinstance(losses, str) else losses):
        if name not in known:
            raise ValueError(f"unknown loss '{name}'; known: {sorted(known)}")
        candidates[name] = known[name]()
    for name, loss_fn in candidates.items():
        start = time.perf_counter()
        if loss_fn is None:
            fused = sources.mean(0) if name == "average" else sources[0]
        else:
            fused = optimise(loss_fn, sources, iterations)
        ssim_mri, ssim_pet = (float(fm.masked_ssim(fused, s, mask)) for s in sources)
        psnr = float(sum(fm.masked_psnr(fused, s, mask) for s in sources) / 2)
        corr, kept = fm.regional_pattern(fused, sources[1], regions, range(1, 9), range(9, 13))
        row = {"F": name if loss_fn is None else f"optimum of {name}", "psnr": psnr, "ssim": (ssim_mri + ssim_pet) / 2,
               "ssim_mri": ssim_mri, "ssim_pet": ssim_pet, "regional_corr": float(corr), "contrast_kept": float(kept),
               "seconds": time.perf_counter() - start}
        print(f"{row['F']:>18}: PSNR {psnr:6.2f}  SSIM {row['ssim']:.3f} (MRI {ssim_mri:.3f}, PET {ssim_pet:.3f})  "
              f"regional r {row['regional_corr']:.3f}  contrast kept {row['contrast_kept']:.2f}", flush=True)

