"""Run mutated series through the app's own input stages, in process, and judge each outcome.

One case: a series folder in which one file is replaced by a mutation of it. The app's loader, the SDK's series
selector with the app's rules, the app's series choice and its volume operator (consistency checks, the SDK's
conversion) turn it into a volume, as ``python -m deploy_app`` does before any registration or inference. The
outcome is compared with the unmutated series' volume:

    refused   FusionInputError (the message names the series and the file)
    same      the same volume: voxel values within 1e-3 of the range, affine within 0.01 mm
    local     voxels differ only in the mutated file's slice
    WRONG     anything else that returned a volume: silently wrong output
    crash     any other exception (its type and the place it was raised)
    hang      no answer within the time limit
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from .mutations import GEOMETRY, IDENTITY, MUTATIONS, PIXELS, STRUCTURE, VALUES

ALLOWED = {GEOMETRY: {"refused", "same"}, IDENTITY: {"refused", "same"}, VALUES: {"refused", "same"},
           PIXELS: {"refused", "same", "local"}, STRUCTURE: {"refused", "same", "local"}}


class _Timeout(Exception):
    pass


@dataclass
class Volume:
    voxels: np.ndarray  # [slice, row, column] as the SDK gives it
    affine: np.ndarray
    slice_of_file: dict  # file name -> slice index


class SeriesReader:
    """The app's input stages for one series label (MR or PT), built once."""

    def __init__(self, label: str):
        from monai.deploy.core import Fragment
        from monai.deploy.operators import DICOMSeriesSelectorOperator

        from deploy_app.app import DEFAULT_RULES, load_selection_rules
        from deploy_app.operators import CheckedDICOMDataLoaderOperator, SeriesVolumeOperator

        self.label = label
        fragment = Fragment()
        self.loader = CheckedDICOMDataLoaderOperator(fragment, name="fuzz_loader")
        self.selector = DICOMSeriesSelectorOperator(fragment, name="fuzz_selector")
        self.rules = load_selection_rules(DEFAULT_RULES)[label]
        self.volume = SeriesVolumeOperator(fragment, label=label, name="fuzz_volume")

    def read(self, folder: Path) -> Volume:
        from monai.deploy.core.domain import StudySelectedSeries

        from deploy_app.operators.series_volume import choose_series

        studies = self.loader.load_data_to_studies(folder)
        selected = self.selector.filter(self.rules, studies, all_matched=True, sort_by_sop_instance_count=True)
        study_sel, sel = choose_series(selected, self.label)
        only = StudySelectedSeries(study_sel.study)
        only.add_selected_series(sel)
        image = self.volume.convert_to_image([only])
        files = [Path(str(i.get_native_sop_instance().filename)).name for i in sel.series.get_sop_instances()]
        return Volume(np.asarray(image.asnumpy(), dtype=np.float64),
                      np.asarray(image.metadata()["nifti_affine_transform"], dtype=float),
                      {name: k for k, name in enumerate(files)})


def compare(base: Volume, got: Volume, mutated_file: str) -> str:
    if got.voxels.shape != base.voxels.shape:
        return "WRONG"
    if np.abs(got.affine[:3, 3] - base.affine[:3, 3]).max() > 0.01 or np.abs(got.affine[:3, :3] - base.affine[:3, :3]).max() > 1e-4:
        return "WRONG"
    scale = max(float(base.voxels.max() - base.voxels.min()), 1e-6)
    differs = np.abs(got.voxels - base.voxels) > 1e-3 * scale
    if not differs.any():
        return "same"
    changed_slices = set(np.flatnonzero(differs.any(axis=(1, 2))))
    if changed_slices <= {base.slice_of_file.get(mutated_file, -1)}:
        return "local"
    return "WRONG"


def run_case(reader: SeriesReader, series_dir: Path, base: Volume, mutation, rng, seconds: int = 60) -> tuple[str, str]:
    """(outcome, detail) of one mutation of one randomly chosen file of ``series_dir``."""
    from deploy_app.errors import FusionInputError

    files = sorted(p for p in series_dir.glob("*.dcm"))
    target = files[int(rng.integers(0, len(files)))]
    other = files[(files.index(target) + 1) % len(files)]
    context = {"other_sop_uid": str(pydicom.dcmread(other, stop_before_pixels=True).SOPInstanceUID)}
    work = Path(tempfile.mkdtemp(prefix="dcfb-fuzz-"))
    try:
        for path in files:
            if path != target:
                os.symlink(path.resolve(), work / path.name)  # a relative study path would dangle
        try:
            data = mutation.apply(target.read_bytes(), rng, context)
        except Exception as err:  # noqa: BLE001 - a mutation that does not apply to this file is not a case
            return "not applicable", f"{type(err).__name__}: {err}"
        (work / target.name).write_bytes(data)
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.alarm(seconds)
        try:
            got = reader.read(work)
        except FusionInputError as err:
            return "refused", str(err)
        except _Timeout:
            return "hang", f"no answer in {seconds} s"
        except Exception as err:  # noqa: BLE001 - exactly what the fuzz run looks for
            frame = traceback.extract_tb(err.__traceback__)[-1]
            return "crash", f"{type(err).__name__} at {Path(frame.filename).name}:{frame.lineno} ({frame.name})"
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        return compare(base, got, target.name), ""
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _raise_timeout(signum, frame):
    raise _Timeout()


def fuzz(study: Path, n_cases: int, seed: int, progress=None) -> dict:
    """``n_cases`` mutations (seeded) over the MR and PT series of ``study``; counts per outcome, the failures."""
    rng = np.random.default_rng(seed)
    readers, bases = {}, {}
    for label in ("MR", "PT"):
        readers[label] = SeriesReader(label)
        bases[label] = readers[label].read(study / label)
    counts, failures = Counter(), Counter()
    for k in range(n_cases):
        label = ("MR", "PT")[k % 2]
        mutation = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))]
        outcome, detail = run_case(readers[label], study / label, bases[label], mutation, rng)
        counts[(mutation.kind, outcome)] += 1
        if outcome != "not applicable" and outcome not in ALLOWED[mutation.kind]:
            failures[f"{outcome}: {mutation.name} ({label}) {detail}"] += 1
        if progress:
            progress(k + 1, n_cases, f"{mutation.name} ({label}): {outcome}")
    return {"counts": counts, "failures": failures}
