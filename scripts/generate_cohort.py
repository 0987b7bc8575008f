"""Generate a simulated MRI / FDG-PET cohort from the MNI152 2009 anatomy.

    python scripts/generate_cohort.py --output_dir data/cohort --n_subjects 20 --seed 0
    python scripts/generate_cohort.py --output_dir /tmp/tiny --n_subjects 4 --size 64

Writes ``sub-NNNN/{mri,pet,regions}.nii.gz`` and ``simulation.json`` per subject, ``datalist.json``
(MONAI decathlon style, paths relative to the output folder) and the MNI copyright notice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import fire
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dcfb_data.cohort import FAMILIES, simulate_subject  # noqa: E402
from dcfb_data.cohort_files import split_entries, subject_id, write_datalist, write_subject  # noqa: E402
from dcfb_data.template import load_template  # noqa: E402

logger = logging.getLogger("generate_cohort")


def _one(args) -> dict:
    output_dir, seed, index, size, fraction_alzheimer, atrophy, family, threads = args
    import torch

    torch.set_num_threads(threads)
    subject = simulate_subject(load_template(size), seed, index, None, fraction_alzheimer, atrophy, family)
    return write_subject(subject, output_dir, subject_id(index))


def generate(
    output_dir: str,
    n_subjects: int = 20,
    seed: int = 0,
    size: int | None = None,
    fraction_alzheimer: float = 0.5,
    atrophy: bool = True,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    workers: int | None = None,
    family: str = "standard",
) -> str:
    """Generate ``n_subjects`` subjects into ``output_dir``; returns the datalist path.

    Args:
        size: ``None`` for the full 1 mm MNI grid (197x233x189), or the number of voxels along the
            longest axis of a coarser isotropic grid (e.g. 64) for fast tests.
        workers: processes (default: the number of CPU cores).
        family: ``standard`` (the training cohort's ranges) or ``heldout`` (settings the training never used:
            larger deformations, other head sizes and T1 contrast, more MR noise and bias, coarser and noisier
            PET); see ``dcfb_data.cohort.FAMILIES``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    if not isinstance(n_subjects, int) or isinstance(n_subjects, bool) or n_subjects < 1:
        raise ValueError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 16):
        raise ValueError(f"size must be None (full grid) or an integer >= 16, got {size!r}")
    if not 0.0 <= float(fraction_alzheimer) <= 1.0:
        raise ValueError(f"fraction_alzheimer must be in [0, 1], got {fraction_alzheimer!r}")
    split_entries([{"id": "x"}], seed, val_fraction, test_fraction)  # validates the fractions early
    os.makedirs(output_dir, exist_ok=True)
    workers = max(1, min(int(workers or os.cpu_count() or 1), n_subjects))
    threads = max(1, (os.cpu_count() or 1) // workers)
    start = time.perf_counter()
    jobs = [(output_dir, seed, i, size, fraction_alzheimer, atrophy, family, threads) for i in range(n_subjects)]
    with tqdm(total=n_subjects, desc="subjects", unit="subject") as bar:
        if workers == 1:
            entries = []
            for job in jobs:
                entries.append(_one(job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                entries = []
                for entry in pool.map(_one, jobs):
                    entries.append(entry)
                    bar.update()
    splits = split_entries(entries, seed, val_fraction, test_fraction)
    path = write_datalist(output_dir, splits, {
        "name": "DCFB simulated MRI/FDG-PET cohort",
        "description": "Simulated from the MNI152 2009 template; see MNI_COPYRIGHT.txt",
        "seed": seed, "size": size, "family": family, "numTraining": len(splits["training"]),
        "numValidation": len(splits["validation"]), "numTest": len(splits["testing"]),
    })
    elapsed = time.perf_counter() - start
    print(f"generated {n_subjects} subjects in {elapsed:.1f} s ({elapsed / n_subjects:.2f} s per subject, "
          f"{workers} worker(s)) -> {path}")
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        fire.Fire(generate)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
