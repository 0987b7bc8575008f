"""DICOM networking with a PACS through pynetdicom: retrieve a study by C-GET, send files by C-STORE.

Nothing here logs patient names or IDs: progress names studies by their Study Instance UID and files by path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    uid_to_sop_class,
)

logger = logging.getLogger(__name__)

# What a fusion study holds, and what a PACS may send along with it (the CT of a PET/CT, secondary captures):
# C-GET needs each storage class offered with the SCP role, and an association has at most 128 contexts.
RETRIEVED_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
)
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


class PacsError(Exception):
    """The PACS could not be reached, or refused a request: the message says which and why."""


@dataclass(frozen=True)
class Pacs:
    """A DICOM node: its AE title, host and port, and the AE title we call it with."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "DCFB_FUSION"

    @classmethod
    def parse(cls, text: str, calling_ae_title: str = "DCFB_FUSION") -> "Pacs":
        """``AE_TITLE@HOST:PORT``."""
        try:
            ae_title, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            pacs = cls(ae_title, host, int(port), calling_ae_title)
        except ValueError as err:
            raise ValueError(f"PACS '{text}' is not AE_TITLE@HOST:PORT") from err
        if not 0 < len(ae_title) <= 16 or not 0 < pacs.port < 65536:
            raise ValueError(f"PACS '{text}': the AE title takes 1-16 characters and the port 1-65535")
        return pacs

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass
class StoreReport:
    sent: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


def _associate(ae: AE, pacs: Pacs, **kwargs):
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, **kwargs)
    if not assoc.is_established:
        raise PacsError(f"PACS {pacs} did not accept an association from {pacs.calling_ae_title} "
                        "(is it running, and does it know this AE title?)")
    return assoc


def _new_ae(pacs: Pacs, timeout_s: float) -> AE:
    ae = AE(ae_title=pacs.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    return ae


def _c_find(pacs: Pacs, query: Dataset, timeout_s: float) -> list[Dataset]:
    """The identifiers a Study Root C-FIND returns; PacsError when the PACS does not answer or fails."""
    ae = _new_ae(pacs, timeout_s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    found = []
    assoc = _associate(ae, pacs)
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise PacsError(f"PACS {pacs} did not answer a C-FIND in time")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif status.Status != 0x0000:
                raise PacsError(f"PACS {pacs} answered a C-FIND with status 0x{status.Status:04X}")
    finally:
        assoc.release()
    return found


def find_study(pacs: Pacs, study_uid: str, timeout_s: float = 60) -> int | None:
    """C-FIND at study level: how many instances the PACS holds for the study (0 when it does not say),
    or None when it does not have the study."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.NumberOfStudyRelatedInstances = ""
    found = _c_find(pacs, query, timeout_s)
    return int(found[0].get("NumberOfStudyRelatedInstances", 0) or 0) if found else None


def retrieve_study(pacs: Pacs, study_uid: str, folder: Path, progress: Callable[[int, int], None] | None = None,
                   timeout_s: float = 600) -> int:
    """C-GET every instance of the study into ``folder`` (one file per SOP instance); returns how many arrived.

    ``progress(completed, total)`` is called as the PACS reports its sub-operations.
    """
    folder.mkdir(parents=True, exist_ok=True)
    received = 0

    def on_store(event) -> int:
        nonlocal received
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        received += 1
        return 0x0000

    ae = _new_ae(pacs, timeout_s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for uid in RETRIEVED_STORAGE_CLASSES:
        ae.add_requested_context(uid, TRANSFER_SYNTAXES)
        roles.append(build_role(uid, scp_role=True))
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    assoc = _associate(ae, pacs, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    failed, last = 0, None
    try:
        for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if not status:
                raise PacsError(f"PACS {pacs} did not answer the C-GET for study {study_uid} in time")
            last = status
            remaining = int(status.get("NumberOfRemainingSuboperations", 0))
            done = int(status.get("NumberOfCompletedSuboperations", 0))
            failed = int(status.get("NumberOfFailedSuboperations", failed))
            if progress and status.Status in (0xFF00, 0xFF01):
                progress(done, done + remaining + failed)
    finally:
        assoc.release()
    if last is not None and last.Status not in (0x0000, 0xB000):
        raise PacsError(f"PACS {pacs} ended the C-GET for study {study_uid} with status 0x{last.Status:04X} "
                        f"({received} instances received, {failed} failed)")
    if failed:
        logger.warning("PACS %s could not send %d instances of study %s", pacs, failed, study_uid)
    return received


def listed_instances(pacs: Pacs, study_uid: str, series_uid: str, timeout_s: float = 60) -> set[str]:
    """C-FIND at image level: the SOP Instance UIDs the PACS lists for one series."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = ""
    return {str(identifier.SOPInstanceUID) for identifier in _c_find(pacs, query, timeout_s)}


def store_files(pacs: Pacs, files: list[Path], progress: Callable[[int, int], None] | None = None,
                timeout_s: float = 600) -> StoreReport:
    """C-STORE each file, then check with C-FIND that the PACS lists every object it acknowledged.

    An object the PACS refuses is reported with the status it gave, the others still go. The check afterwards
    catches a PACS that acknowledges and then drops (Orthanc 1.10 answers success for an instance that its
    ReceivedInstanceFilter throws away).
    """
    headers = [(path, dcmread(path, stop_before_pixels=True)) for path in files]
    ae = _new_ae(pacs, timeout_s)
    for sop_class, syntax in sorted({(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for _, h in headers}):
        ae.add_requested_context(sop_class, [syntax])
    report = StoreReport()
    assoc = _associate(ae, pacs)
    try:
        accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
        for k, (path, header) in enumerate(headers, start=1):
            name = uid_to_sop_class(header.SOPClassUID).name or str(header.SOPClassUID)
            if (str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)) not in accepted:
                report.refused.append((path, f"the PACS accepts no {name} objects in transfer syntax "
                                             f"{header.file_meta.TransferSyntaxUID.name}"))
                continue
            status = assoc.send_c_store(dcmread(path))
            code = getattr(status, "Status", None)
            if code is None:
                report.refused.append((path, "no answer (association lost)"))
            elif code in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or success with a coercion warning
                report.sent.append(path)
            else:
                report.refused.append((path, f"status 0x{code:04X} for a {name} object"))
            if progress:
                progress(k, len(headers))
    finally:
        assoc.release()

    by_series: dict[tuple[str, str], list[tuple[Path, str]]] = {}
    header_of = dict(headers)
    for path in report.sent:
        h = header_of[path]
        by_series.setdefault((str(h.StudyInstanceUID), str(h.SeriesInstanceUID)), []).append((path, str(h.SOPInstanceUID)))
    for (study_uid, series_uid), items in by_series.items():
        listed = listed_instances(pacs, study_uid, series_uid, timeout_s)
        for path, sop_uid in items:
            if sop_uid not in listed:
                report.sent.remove(path)
                report.refused.append((path, "acknowledged, but the PACS does not list it afterwards (dropped)"))
    return report
