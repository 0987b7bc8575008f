"""A round trip through a real PACS: Debian's Orthanc on loopback, started here.

The tiny study is C-STOREd into Orthanc, ``scripts/pacs_fusion.py`` retrieves it by C-GET, fuses it and sends the
results back; Orthanc must then list the fused and colour series in the same patient and study, and give back our
pixels through its own REST renderer. A second AE title, whose colour objects a Lua filter drops (Orthanc 1.10
still answers success), shows that objects the PACS does not keep are found and reported by name.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import ROOT, SCRIPTS

sys.path.insert(0, SCRIPTS)
from dcfb_pacs.dimse import Pacs, store_files  # noqa: E402

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
REFUSE_COLOUR_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  if origin["RemoteAet"] == "DCFB_NO_COLOUR" and dicom["SOPClassUID"] == "{SECONDARY_CAPTURE}" then
    return false
  end
  return true
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A fresh Orthanc on loopback: (Pacs, REST base URL)."""
    if not os.path.exists(ORTHANC):
        if os.environ.get("DCFB_REQUIRE_SERVICES") == "1":
            pytest.fail("Orthanc is missing: scripts/run_tests.sh installs Debian's orthanc when run as root")
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    home = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    (home / "refuse_colour.lua").write_text(REFUSE_COLOUR_LUA)
    modality = {"Host": "127.0.0.1", "Port": 104, "AllowEcho": True, "AllowFind": True, "AllowGet": True,
                "AllowMove": False, "AllowStore": True}
    config = {
        "Name": "dcfb-test", "StorageDirectory": str(home / "db"), "IndexDirectory": str(home / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "DicomServerEnabled": True, "Plugins": [],
        "LuaScripts": [str(home / "refuse_colour.lua")],
        "DicomModalities": {"dcfb": {"AET": "DCFB_FUSION", **modality},
                            "nocolour": {"AET": "DCFB_NO_COLOUR", **modality}},
    }
    (home / "orthanc.json").write_text(json.dumps(config))
    log = open(home / "orthanc.log", "w")
    proc = subprocess.Popen([ORTHANC, str(home / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/system", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("Orthanc did not start: " + (home / "orthanc.log").read_text()[-2000:])
    if proc.poll() is not None:
        pytest.fail("Orthanc exited: " + (home / "orthanc.log").read_text()[-2000:])
    yield Pacs("ORTHANC", "127.0.0.1", dicom_port), url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def rest(url: str, path: str, body: str | None = None):
    request = urllib.request.Request(url + path, data=body.encode() if body is not None else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
    return json.loads(data) if response.headers.get_content_type() == "application/json" else data


def pacs_fusion(pacs: Pacs, study_uid: str, model: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, "pacs_fusion.py"), "--pacs", str(pacs),
                           "--study", study_uid, "--model", model, *extra],
                          cwd=ROOT, capture_output=True, text=True)


def test_study_from_orthanc_is_fused_and_the_series_come_back_into_the_same_study(orthanc, tiny_study, app_bundle,
                                                                                   tmp_path):
    pacs, url = orthanc
    sources = sorted(Path(tiny_study).rglob("*.dcm"))
    assert not store_files(pacs, sources).refused
    first = pydicom.dcmread(sources[0], stop_before_pixels=True)
    study_uid = str(first.StudyInstanceUID)

    proc = pacs_fusion(pacs, study_uid, app_bundle, "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"retrieved {len(sources)} instances" in proc.stdout
    assert "0 refused" in proc.stdout
    said = proc.stdout + proc.stderr
    assert str(first.PatientName) not in said and str(first.PatientID) not in said

    [study] = [hit for hit in rest(url, "/tools/lookup", study_uid) if hit["Type"] == "Study"]
    patient = rest(url, f"/studies/{study['ID']}")["ParentPatient"]
    series = rest(url, f"/studies/{study['ID']}/series")
    descriptions = {s["MainDicomTags"].get("SeriesDescription", ""): s for s in series}
    fused = next(s for d, s in descriptions.items() if d.startswith("DCFB fusion of MR"))
    colour = next(s for d, s in descriptions.items() if d.startswith("DCFB fusion, PET colour"))
    n_mr = len(list(Path(tiny_study, "MR").glob("*.dcm")))
    assert len(fused["Instances"]) == len(colour["Instances"]) == n_mr
    assert {s["ParentStudy"] for s in (fused, colour)} == {study["ID"]}
    assert len(rest(url, f"/patients/{patient}/studies")) == 1  # no second patient or study was made

    # Orthanc's own decoder gives back the pixels the app wrote, for every fused image, and renders a preview.
    written = {}
    for path in (tmp_path / "work" / "output" / "fused_dicom").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        written[str(ds.SOPInstanceUID)] = ds.pixel_array
    assert len(written) == n_mr
    for instance in fused["Instances"]:
        tags = rest(url, f"/instances/{instance}/simplified-tags")
        ours = written[tags["SOPInstanceUID"]]
        raw = rest(url, f"/instances/{instance}/frames/0/raw")
        theirs = np.frombuffer(raw, dtype=np.int16 if int(tags["PixelRepresentation"]) else np.uint16)
        assert np.array_equal(theirs.reshape(ours.shape), ours)
    assert rest(url, f"/instances/{fused['Instances'][0]}/preview").startswith(b"\x89PNG")


def test_missing_study_and_refused_objects_are_reported(orthanc, tiny_study, app_bundle):
    pacs, _ = orthanc
    missing = pacs_fusion(pacs, "1.2.3.4.5.6.7.8.9", app_bundle)
    assert missing.returncode == 1 and "is not on ORTHANC@" in missing.stderr, missing.stderr

    study_uid = str(pydicom.dcmread(next(Path(tiny_study, "MR").glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    refused = pacs_fusion(pacs, study_uid, app_bundle, "--calling_aet", "DCFB_NO_COLOUR")
    assert refused.returncode == 4, refused.stdout[-2000:] + refused.stderr[-2000:]
    lines = [line for line in refused.stderr.splitlines() if "refused fusion_color_dicom/" in line]
    assert len(lines) == len(list(Path(tiny_study, "MR").glob("*.dcm"))), refused.stderr[-2000:]
    assert "does not list it afterwards (dropped)" in lines[0]

    unreachable = pacs_fusion(Pacs("NOBODY", "127.0.0.1", free_port()), study_uid, app_bundle)
    assert unreachable.returncode == 4 and "did not accept an association" in unreachable.stderr
