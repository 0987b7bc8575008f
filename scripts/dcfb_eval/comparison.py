"""Fuse each case of a datalist split with several methods and score every fusion with the same metrics.

All methods see the same inputs: the bundle's own inference preprocessing (PET resampled onto the MRI,
cropped, each scaled to [0, 1]). Every fused image, and the two sources as the network saw them, are then
mapped back onto the MRI's own grid with the bundle's ``Invertd``, where the cohort generator's
``regions.nii.gz`` lies, and scored there inside the head mask.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.inferers import SliceInferer, SlidingWindowInferer
from monai.transforms import Invertd

from .classical_fusion import CLASSICAL_METHODS

METRIC_CLASSES = {
    "psnr": "FusionMaskedPSNRMetric", "ssim": "FusionMaskedSSIMMetric", "en": "FusionEntropyMetric",
    "sd": "FusionSDMetric", "sf": "FusionSFMetric", "ag": "FusionAGMetric", "mi": "FusionMIMetric",
    "nmi": "FusionNMIMetric", "fmi": "FusionFMIMetric", "scd": "FusionSCDMetric", "vif": "FusionVIFMetric",
    "qabf": "FusionQabfMetric",
}


class BundlePipeline:
    """The bundle's inference preprocessing, inferer and inversion, read from its configs (not restated)."""

    def __init__(self, bundle_dir: str, windows: int = 0):
        """``windows`` > 0: infer 3D models over MONAI's overlapping (Gaussian-blended) windows of that size, as
        bundle 0.4 did for its instance-normalised network, instead of the bundle's inferer (one pass, or tiles with
        a context margin); it is also the in-plane window of 2D models (96 when 0)."""
        self.bundle_dir = os.path.abspath(bundle_dir)
        if self.bundle_dir not in sys.path:
            sys.path.insert(0, self.bundle_dir)
        parser = ConfigParser()
        parser.read_config(os.path.join(self.bundle_dir, "configs", "inference.json"))
        parser["bundle_root"] = self.bundle_dir
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.inferer = parser.get_parsed_content("inferer")
        self.inferer.progress = False
        self.window = int(windows) or 96
        if windows:
            self.inferer = SlidingWindowInferer(roi_size=[self.window] * 3, overlap=0.5, mode="gaussian")
        self.invert = Invertd(keys=["pred", "mri_in", "pet_in"], transform=self.preprocessing, orig_keys="mri",
                              nearest_interp=False, to_tensor=True)
        from scripts import metrics

        self.metrics = {name: getattr(metrics, cls)() for name, cls in METRIC_CLASSES.items()}
        # kept apart from the metrics: keep_metrics may drop the one it is read from
        self.mask_threshold = self.metrics["psnr"].mask_threshold
        self.regional = metrics.RegionalPatternMetric()

    def keep_metrics(self, names: list[str]) -> None:
        """Score only the metrics ``names`` (the regional pattern is always scored); ValueError names any
        unknown one."""
        unknown = sorted(set(names) - set(self.metrics))
        if unknown:
            raise ValueError(f"unknown {unknown}; known: {sorted(self.metrics)}")
        self.metrics = {k: v for k, v in self.metrics.items() if k in names}

    def head_mask(self, sources: torch.Tensor) -> torch.Tensor:
        """The head mask every metric is scored in: sources [2, *S] -> bool [*S]."""
        from scripts.metrics import head_mask

        return head_mask(sources, self.mask_threshold)

    def head_box(self, sources: torch.Tensor, margin: int = 10) -> tuple[slice, ...]:
        mask = self.head_mask(sources)
        index = torch.nonzero(mask)
        if len(index) == 0:
            return tuple(slice(None) for _ in mask.shape)
        low, high = index.min(0).values - margin, index.max(0).values + margin + 1
        return tuple(slice(max(int(lo), 0), min(int(hi), n)) for lo, hi, n in zip(low, high, mask.shape))

    def torchscript_method(self, path: str, spatial_dims: int = 3, pet_emphasis: float | None = None) -> Callable:
        """A TorchScript fusion model as a method: a 3D model through the bundle's inferer, a 2D model slice by
        slice along the axial (last) axis with MONAI's SliceInferer, as ``train_2d.json`` validates it.
        ``pet_emphasis``: the lambda of a conditioned model (its ``pet_emphasis`` buffer); None keeps its own."""
        network = torch.jit.load(path, map_location="cpu").eval()
        if pet_emphasis is not None:
            if not hasattr(network, "pet_emphasis"):
                raise ValueError(f"{path}: the model has no pet_emphasis (it was not trained with the conditioning)")
            network.pet_emphasis.fill_(float(pet_emphasis))
        inferer = self.inferer if spatial_dims == 3 else SliceInferer(
            spatial_dim=2, roi_size=[self.window] * 2, sw_batch_size=16, overlap=0.25, mode="gaussian")

        def fuse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return inferer(torch.stack([a, b])[None], network)[0, 0]

        return fuse

    def to_mri_grid(self, data: dict, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A fused image on the preprocessed grid [*S'], and the two sources as the network saw them, mapped back
        onto the MRI's own grid with the bundle's ``Invertd``: (F [1, 1, *S], sources [1, 2, *S])."""
        image = data["image"]
        case = dict(data)
        case["pred"] = image[0:1].clone()
        case["pred"].set_array(fused[None].float())
        case["mri_in"], case["pet_in"] = image[0:1].clone(), image[1:2].clone()
        case = self.invert(case)
        return case["pred"][None].as_tensor(), torch.cat([case["mri_in"], case["pet_in"]])[None].as_tensor()

    def fused_cases(self, item: dict, methods: dict[str, Callable]):
        """Fuse one case with each method and map the result back onto the MRI's grid, cropped to the head's
        bounding box (plus a margin for the filters' reach: the same voxels in the mask, a fraction of the
        background, a fraction of the time). Yields (name, seconds, F [1, 1, *S], sources [1, 2, *S],
        regions [1, 1, *S] or None)."""
        data = self.preprocessing({"mri": item["mri"], "pet": item["pet"]})
        image = data["image"]
        regions = torch.as_tensor(np.asarray(nib.load(item["regions"]).dataobj)) if item.get("regions") else None
        for name, method in methods.items():
            start = time.perf_counter()
            fused = method(image[0].as_tensor(), image[1].as_tensor()).clamp(0, 1)
            seconds = time.perf_counter() - start
            f, sources = self.to_mri_grid(data, fused)
            on_regions_grid = regions is not None and regions.shape == f.shape[2:]
            box = self.head_box(sources[0])
            yield (name, seconds, f[(..., *box)], sources[(..., *box)],
                   regions[box][None, None] if on_regions_grid else None)

    def score_case(self, item: dict, methods: dict[str, Callable]) -> list[dict]:
        rows = []
        for name, seconds, f, sources, regions in self.fused_cases(item, methods):
            row = {"case": os.path.basename(str(item["id"])), "pattern": item.get("pattern", ""), "method": name,
                   "seconds": seconds}
            for metric_name, metric in self.metrics.items():
                row[metric_name] = float(metric(f, sources)[0, 0])
                metric.reset()
            if regions is not None:
                corr, kept = self.regional(f, sources, regions=regions)[0]
                self.regional.reset()
                row["regional_corr"], row["contrast_kept"] = float(corr), float(kept)
            rows.append(row)
        return rows


def parse_models(spec) -> dict[str, str]:
    """``name=path.ts[,name=path.ts]`` as a dict (fire hands over a non-string for an empty flag)."""
    return dict(pair.split("=", 1) for pair in spec.split(",") if pair) if isinstance(spec, str) else {}


def parse_names(spec) -> list[str]:
    """``a,b`` as a list (fire hands ``a,b`` over as a tuple, and an empty flag as a non-string)."""
    if not spec or not isinstance(spec, (str, tuple, list)):
        return []
    return [str(n) for n in (spec.split(",") if isinstance(spec, str) else spec) if n]


def default_methods(pipeline: BundlePipeline, models: dict[str, str], models_2d: dict[str, str] | None = None,
                    baselines: list[str] | None = None):
    """The classical ``baselines`` (default: all of them), then the 3D and the 2D TorchScript models."""
    unknown = sorted(set(baselines or []) - set(CLASSICAL_METHODS))
    if unknown:
        raise ValueError(f"--baselines: unknown baseline(s) {unknown}; known: {sorted(CLASSICAL_METHODS)}")
    methods = {name: CLASSICAL_METHODS[name] for name in (CLASSICAL_METHODS if baselines is None else baselines)}
    for spatial_dims, group in ((3, models), (2, models_2d or {})):
        for name, path in group.items():
            methods[name] = pipeline.torchscript_method(path, spatial_dims, pet_emphasis=emphasis_of(name))
    return methods


def emphasis_of(name: str) -> float | None:
    """The PET emphasis a method name asks for: ``dcfb_3d@0.75`` -> 0.75; None without ``@``."""
    if "@" not in name:
        return None
    try:
        value = float(name.rsplit("@", 1)[1])
    except ValueError:
        raise ValueError(f"model {name}: the part after @ must be a PET emphasis in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"model {name}: the PET emphasis after @ must lie in [0, 1]")
    return value


def methods_from_flags(pipeline: BundlePipeline, models: str = "", models_2d: str = "", baselines: str = "all"):
    """The methods a script's flags name: ``models`` (3D) and ``models_2d`` (2D, slice by slice) as
    ``name=path.ts[,...]`` (a name ``x@0.75`` runs a conditioned model at PET emphasis 0.75), ``baselines`` as
    ``all``, ``none`` or ``average,pca,...``. ValueError names a model
    file that is missing or an unknown baseline."""
    model_paths, model_paths_2d = parse_models(models), parse_models(models_2d)
    for name, path in {**model_paths, **model_paths_2d}.items():
        if not os.path.isfile(path):
            raise ValueError(f"model {name}: file not found: {path}")
    chosen = None if baselines == "all" else [] if baselines in ("none", "") else parse_names(baselines)
    return default_methods(pipeline, model_paths, model_paths_2d, chosen)


def summarize(rows: list[dict]) -> dict:
    """mean and std per method and metric (NaN rows left out), and the number of cases."""
    summary: dict = {}
    keys = [k for k in rows[0] if k not in ("case", "pattern", "method")] if rows else []
    for method in dict.fromkeys(r["method"] for r in rows):
        subset = [r for r in rows if r["method"] == method]
        summary[method] = {"n": len(subset)}
        for key in keys:
            values = np.array([r.get(key, np.nan) for r in subset], dtype=float)
            values = values[np.isfinite(values)]
            summary[method][key] = {"mean": float(values.mean()) if len(values) else None,
                                    "std": float(values.std()) if len(values) else None}
    return summary
