"""The fusion datalist: MONAI's decathlon format with ``mri`` and ``pet`` NIfTI paths per item, and where
the fused volumes of its items are written."""

from __future__ import annotations

import json
import os

from monai.data import load_decathlon_datalist
from monai.data.folder_layout import default_name_formatter

REQUIRED_KEYS = ("mri", "pet")


def datalist_items(datalist: str, split: str = "training", base_dir: str | None = None) -> list[dict]:
    """The configs' datasets: ``load_fusion_datalist``'s items, or an empty list while the datalist file does not
    exist, so that a config can be parsed and its workflow's properties checked without data (as the Model Zoo's
    CI does); ``require_datalist``, first in every ``run``, refuses the missing file before any work."""
    return load_fusion_datalist(datalist, split, base_dir) if os.path.isfile(datalist) else []


def require_datalist(datalist: str) -> None:
    """Raise ``FileNotFoundError`` naming ``datalist`` when it does not exist (see ``datalist_items``)."""
    if not os.path.isfile(datalist):
        raise FileNotFoundError(
            f"{datalist}: datalist not found; pass --dataset_dir (the folder that holds datalist.json) "
            "or --datalist (the file)"
        )


def fused_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImaged``'s ``output_name_formatter``: ``<input's folder name>/<input's name>``, so that with
    ``data_root_dir="."`` every output lands in ``output_dir/<folder>/`` wherever the input is (a path relative to
    a dataset folder climbs out of ``output_dir`` for inputs elsewhere), and two subjects' ``mri.nii.gz`` do not
    collide."""
    names = default_name_formatter(metadict, saver)
    path = os.path.abspath(str(names["subject"]))
    names["subject"] = os.path.join(os.path.basename(os.path.dirname(path)) or "input", os.path.basename(path))
    return names


def load_fusion_datalist(datalist: str, split: str = "training", base_dir: str | None = None) -> list[dict]:
    """Items of ``split`` with absolute paths, checked: the file parses, the split exists and is a
    non-empty list, every item has ``mri`` and ``pet``, and every file exists.

    Args:
        datalist: path to the JSON file.
        split: ``training``, ``validation`` or ``testing``.
        base_dir: folder the relative paths start from (default: the datalist's folder).

    Raises:
        FileNotFoundError, ValueError: naming the datalist (and item or file) and the problem.
    """
    if not os.path.isfile(datalist):
        raise FileNotFoundError(f"{datalist}: datalist not found")
    try:
        with open(datalist) as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{datalist}: not valid JSON ({err})") from err
    if not isinstance(content, dict) or split not in content:
        raise ValueError(
            f"{datalist}: has no {split!r} list (keys: {sorted(content) if isinstance(content, dict) else type(content).__name__})"
        )
    if not isinstance(content[split], list) or not content[split]:
        raise ValueError(f"{datalist}: the {split!r} list is empty")
    for i, item in enumerate(content[split]):
        missing = [k for k in REQUIRED_KEYS if not isinstance(item, dict) or k not in item]
        if missing:
            raise ValueError(
                f"{datalist}: {split}[{i}] lacks the key(s) {missing}; each item needs {list(REQUIRED_KEYS)}"
            )
    base_dir = base_dir or os.path.dirname(os.path.abspath(datalist))
    items = load_decathlon_datalist(datalist, is_segmentation=False, data_list_key=split, base_dir=base_dir)
    for i, item in enumerate(items):
        for key in REQUIRED_KEYS:
            if not os.path.isfile(item[key]):
                raise FileNotFoundError(f"{datalist}: {split}[{i}] {key} file not found: {item[key]}")
    return items
