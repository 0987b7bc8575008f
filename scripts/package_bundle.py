"""Package the bundle the way the MONAI Model Zoo distributes it.

    .venv/bin/python scripts/package_bundle.py                 # write bundle/large_files.yml and build/<zip>
    .venv/bin/python scripts/package_bundle.py --check          # exit 1 if large_files.yml does not match the weights

The Zoo keeps a bundle's weights out of its repository: ``large_files.yml`` lists each weight file's path, URL
and MD5, and the zip that ``python -m monai.bundle download`` unpacks holds the bundle with the weights in place
and without ``large_files.yml`` (as the Zoo's ``ci/update_model_info.py`` builds it). This script writes both:
``large_files.yml`` from the weights in ``bundle/models`` (the URLs are where the release assets are to be
uploaded: ``--base_url``), and ``<output_dir>/brain_mri_pet_fusion_v<version>.zip``, whose MD5s it checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile

import fire
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE_NAME = "brain_mri_pet_fusion"
WEIGHTS = ("models/model.pt", "models/model.ts")
DEFAULT_BASE_URL = "https://github.com/dcfb-fusion/dcfb-fusion/releases/download/v{version}"
# not part of a released bundle: run outputs, caches, the Zoo's downloaded schema and export check, local variants
SKIP_DIRS = {"eval", "logs", "__pycache__", ".pytest_cache"}
SKIP_FILES = {"large_files.yml", "models/verify_model.ts", "models/.gitkeep"}
FIXED_TIME = (2022, 5, 30, 0, 0, 0)  # every entry gets one timestamp, as the Zoo's zips do: reproducible archives


def md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def large_files(bundle_dir: str, base_url: str, version: str) -> dict:
    """``large_files.yml``'s content for the weights in ``bundle_dir``."""
    entries = []
    for rel in WEIGHTS:
        path = os.path.join(bundle_dir, rel)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: weight file missing (train and export the bundle first)")
        name = f"{BUNDLE_NAME}_v{version}_{os.path.basename(rel)}"
        entries.append({"path": rel, "url": f"{base_url.format(version=version).rstrip('/')}/{name}",
                        "hash_val": md5(path), "hash_type": "md5"})
    return {"large_files": entries}


def bundle_files(bundle_dir: str) -> list[str]:
    """The bundle's files to release, relative to ``bundle_dir``, sorted."""
    out = []
    for folder, dirs, files in os.walk(bundle_dir):
        rel_folder = os.path.relpath(folder, bundle_dir)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not (rel_folder == "models" and d.startswith("variant")))
        for name in files:
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if rel not in SKIP_FILES and not name.endswith(".pyc"):
                out.append(rel)
    return sorted(out)


def write_zip(bundle_dir: str, zip_path: str, listed: dict) -> None:
    """The Zoo's zip: ``<BUNDLE_NAME>/...`` with the weights in place; refuses weights whose MD5 differs from
    ``listed`` (``large_files.yml``), so that the zip and the URLs cannot disagree."""
    for entry in listed["large_files"]:
        actual = md5(os.path.join(bundle_dir, entry["path"]))
        if actual != entry["hash_val"]:
            raise ValueError(f"{entry['path']}: MD5 {actual} differs from large_files.yml ({entry['hash_val']})")
    tmp = zip_path + ".partial"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for rel in bundle_files(bundle_dir):
            info = zipfile.ZipInfo(f"{BUNDLE_NAME}/{rel}", date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(os.path.join(bundle_dir, rel), "rb") as f:
                archive.writestr(info, f.read())
    os.replace(tmp, zip_path)


def main(bundle_dir: str = os.path.join(ROOT, "bundle"), output_dir: str = os.path.join(ROOT, "build"),
         base_url: str = DEFAULT_BASE_URL, check: bool = False) -> str:
    """Write ``large_files.yml`` and the zip (returns the zip's path); with ``check``, only compare
    ``large_files.yml`` with the weights (exit 1 when they differ)."""
    version = json.load(open(os.path.join(bundle_dir, "configs", "metadata.json")))["version"]
    yml = os.path.join(bundle_dir, "large_files.yml")
    wanted = large_files(bundle_dir, base_url, version)
    if check:
        if not os.path.isfile(yml):
            raise FileNotFoundError(f"{yml}: missing (run scripts/package_bundle.py)")
        listed = yaml.safe_load(open(yml))
        stale = [e["path"] for e in wanted["large_files"]
                 if {x["path"]: x.get("hash_val") for x in listed.get("large_files", [])}.get(e["path"]) != e["hash_val"]]
        if stale:
            print(f"large_files.yml is stale for {', '.join(stale)}: run scripts/package_bundle.py", file=sys.stderr)
            sys.exit(1)
        print(f"large_files.yml matches the weights of version {version}")
        return yml
    with open(yml, "w") as f:
        yaml.safe_dump(wanted, f, sort_keys=False)
    os.makedirs(output_dir, exist_ok=True)
    zip_path = os.path.join(output_dir, f"{BUNDLE_NAME}_v{version}.zip")
    write_zip(bundle_dir, zip_path, wanted)
    print(f"wrote {yml} and {zip_path} ({os.path.getsize(zip_path) / 2**20:.1f} MiB)")
    for entry in wanted["large_files"]:
        print(f"  upload {os.path.join(bundle_dir, entry['path'])} as {entry['url']}")
    return zip_path


if __name__ == "__main__":
    try:
        fire.Fire(main)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
