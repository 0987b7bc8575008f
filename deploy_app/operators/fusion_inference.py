"""Run the bundle's TorchScript model with the bundle's own preprocessing, inferer and inversion.

The transforms are not restated here: they are read from the bundle's ``configs/inference.json`` and its
``scripts`` package, so that the app and ``python -m monai.bundle run`` cannot drift apart.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from monai.bundle import ConfigParser
from monai.deploy.core import Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import DISALLOW_LOAD_SAVE, DISALLOW_SAVE, filter_compose
from monai.transforms import ResampleToMatchd

from ..errors import FusionInputError
from ..fusion_inputs import AlignedPair, FusionResult

logger = logging.getLogger(__name__)


def find_bundle(model_path: Path) -> Path:
    """The bundle folder for ``model_path``: a bundle folder itself, a folder holding one bundle folder (the
    MAP's models folder), or the ``models/model.ts`` file inside a bundle."""
    model_path = Path(model_path)

    def is_bundle(p: Path) -> bool:
        return (p / "configs" / "inference.json").is_file() and (p / "scripts").is_dir()

    if model_path.is_file() and is_bundle(model_path.parent.parent):
        return model_path.parent.parent
    if model_path.is_dir():
        if is_bundle(model_path):
            return model_path
        inner = [p for p in sorted(model_path.iterdir()) if p.is_dir() and is_bundle(p)]
        if len(inner) == 1:
            return inner[0]
    raise FusionInputError(f"model path {model_path} is not a DCFB bundle: expected a folder with "
                           "configs/inference.json, scripts/ and models/model.ts (or that model.ts file)")


def load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise FusionInputError(f"model file {path} does not exist: export it with "
                               "'python -m monai.bundle ckpt_export' (see bundle/docs/README.md)")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as err:  # torch raises RuntimeError, ValueError or pickle errors for a bad archive
        raise FusionInputError(f"model file {path} cannot be read as a TorchScript model ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''})") from err


def optimize_for_cpu(network: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The TorchScript model with its weights in channels-last 3D layout, for CPU inference.

    Why: oneDNN runs this network's few-channel 3D convolutions much faster in channels-last layout; with the
    weights in it, every convolution takes that route and passes the layout on. Same fp32 arithmetic in another
    order: outputs differ by about 2e-7, far below the fused series' 12-bit rescale step (tests compare the app
    with the bundle's eager inference). Measured on the 2-core development machine (``scripts/benchmark.py``
    fp32-opt, forward on the 1 mm brain grid): 2.53 s against 3.46 s in the default layout. On by default on a CPU;
    ``DCFB_CPU_OPTIMIZE=0`` turns it off. (Freezing with ``torch.jit.optimize_for_inference``, tried before, was
    slower on a whole brain: 4.15 s against 3.61 s.)"""
    converted = network.to(memory_format=torch.channels_last_3d)
    logger.info("CPU inference: weights in channels-last 3D layout for oneDNN, the model run by TorchScript's plain "
                "interpreter (DCFB_CPU_OPTIMIZE=0 turns both off)")
    return converted


class FusionInferenceOperator(Operator):
    """Fuses an ``AlignedPair`` with the bundle's TorchScript model.

    Named input: ``pair`` (``AlignedPair``). Named output: ``result`` (``FusionResult``): the fused image on
    the MR's grid, [D, H, W] float32 in [0, 1].

    The bundle (``model_path``, see ``find_bundle``) is read when the operator is built, so that an unreadable
    model is refused before any DICOM file is read.
    """

    def __init__(self, fragment, *args, model_path: Path, pet_emphasis: float | None = None,
                 optimize_cpu: bool = True, **kwargs):
        self.bundle_dir = find_bundle(model_path)
        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        model_file = Path(model_path) if Path(model_path).is_file() else self.bundle_dir / "models" / "model.ts"
        self.network = load_torchscript(model_file, self.device)
        if str(self.bundle_dir) not in sys.path:  # the configs reference the bundle's own ``scripts.*``
            sys.path.insert(0, str(self.bundle_dir))
        parser = ConfigParser()
        parser.read_meta(str(self.bundle_dir / "configs" / "metadata.json"))
        parser.read_config(str(self.bundle_dir / "configs" / "inference.json"))
        parser["bundle_root"] = str(self.bundle_dir)
        parser["device"] = self.device
        # LoadImage / SaveImage are the bundle's file I/O; here the volumes come from DICOM and go to DICOM.
        self.preprocessing = filter_compose(parser.get_parsed_content("preprocessing"), DISALLOW_LOAD_SAVE)
        # The PET onto the MR's grid is the bundle's own step; the app runs it once, before the rest of the
        # preprocessing, and keeps the result for the writer (the colour series, the registered PET): the step in
        # the preprocessing then finds the PET on the MR's grid already and passes it on unchanged (MONAI skips a
        # resampling to the same affine and shape). Saves a second resampling of the whole head (0.3 s).
        resampling = [t for t in self.preprocessing.transforms if isinstance(t, ResampleToMatchd)]
        if len(resampling) != 1:
            raise FusionInputError(f"bundle {self.bundle_dir}: its preprocessing has {len(resampling)} "
                                   "ResampleToMatchd steps, expected one (the PET onto the MR's grid)")
        self.pet_to_mr_grid = resampling[0]
        self.postprocessing = filter_compose(parser.get_parsed_content("postprocessing"), DISALLOW_SAVE)
        self.inferer = parser.get_parsed_content("inferer")
        # lambda of the conditioned network: the site's choice, or the bundle's default
        self.pet_emphasis = float(parser.get_parsed_content("pet_emphasis") if pet_emphasis is None else pet_emphasis)
        if not hasattr(self.network, "pet_emphasis"):
            raise FusionInputError(f"model file {model_file} has no pet_emphasis: export it from this bundle's "
                                   "checkpoint with 'python -m monai.bundle ckpt_export' (see bundle/docs/README.md)")
        self.network.pet_emphasis.fill_(self.pet_emphasis)
        self.optimized = optimize_cpu and self.device.type == "cpu"
        if self.optimized:
            self.network = optimize_for_cpu(self.network)
        logger.info("model: %s (bundle %s) on %s, PET emphasis %.2f", model_file.name, self.bundle_dir, self.device,
                    self.pet_emphasis)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("pair")
        spec.output("result")

    def compute(self, op_input, op_output, context):
        op_output.emit(self.fuse(op_input.receive("pair")), "result")

    def fuse(self, pair: AlignedPair) -> FusionResult:
        timings = {}
        start = time.perf_counter()
        pet_on_mr = self.pet_to_mr_grid({"mri": pair.mri[None], "pet": pair.pet[None]})["pet"][0]
        data = self.preprocessing({"mri": pair.mri, "pet": pet_on_mr})
        timings["preprocess_s"] = time.perf_counter() - start
        start = time.perf_counter()
        # The app calls the model once (once per tile beyond the memory budget). TorchScript's profiling executor
        # spends its first calls recording and specialising the graph, which pays only from the third call on; the
        # plain interpreter runs the same operations (bit-identical outputs). Measured on the 2-core AMD machine, the
        # first pass over a whole head: alone and without page faults, median 2.95 s against 3.37 s (seven alternating
        # pairs); in the app (network_s), median 3.25 s against 3.44 s (eight pairs, six of them faster).
        with torch.inference_mode(), torch.jit.optimized_execution(not self.optimized):
            pred = self.inferer(data["image"][None].to(self.device), self.network)[0].cpu()
        timings["network_s"] = time.perf_counter() - start
        start = time.perf_counter()
        data["pred"] = pred
        data = self.postprocessing(data)
        timings["postprocess_s"] = time.perf_counter() - start
        fused = np.clip(data["pred"][0].numpy(), 0.0, 1.0).transpose(2, 1, 0)
        if fused.shape != pair.mri.shape[::-1]:
            raise RuntimeError(f"fused image {fused.shape} is not on the MR grid {pair.mri.shape[::-1]}")
        logger.info("fused %s voxels in %.1f s", "x".join(map(str, fused.shape)), sum(timings.values()))
        return FusionResult(pair=pair, fused=np.ascontiguousarray(fused, dtype=np.float32),
                            mr_affine_ras=np.asarray(pair.mri.affine, dtype=float),
                            pet_on_mr=np.ascontiguousarray(np.asarray(pet_on_mr, dtype=np.float32).transpose(2, 1, 0)),
                            timings_s=timings)
