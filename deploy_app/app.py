"""The fusion application's operator graph.

    DICOM folder -> study loader -> MR selector -> MR volume ----\
                               \-> PT selector -> PT volume -> PET-to-MR alignment -> fusion inference
                                                                        -> fused DICOM series writer -> OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators import DICOMSeriesSelectorOperator

from . import memory_reuse
from .errors import FusionInputError
from .operators import (
    CheckedDICOMDataLoaderOperator,
    FusedSeriesWriterOperator,
    FusionInferenceOperator,
    PetMrAlignmentOperator,
    SeriesVolumeOperator,
)
from .operators.fused_series_writer import prepare_output_folder

logger = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).with_name("series_selection_rules.json")


@dataclass
class FusionOptions:
    """What a site may set beyond the SDK's input, output and model paths (flags, or environment variables
    for a MAP: DCFB_SELECTION_RULES, DCFB_WRITE_NIFTI, DCFB_WRITE_PREVIEW, DCFB_PET_EMPHASIS, DCFB_CPU_OPTIMIZE,
    DCFB_DICOM_PROCESSES).

    ``pet_emphasis``: lambda in [0, 1] of the conditioned network (0 keeps more MRI, 1 more PET); None takes the
    bundle's default (``pet_emphasis`` in its ``configs/inference.json``). ``optimize_cpu``: on a CPU, run the
    TorchScript model with its weights in channels-last 3D layout (``fusion_inference.optimize_for_cpu``; the same
    fp32 arithmetic in another order; faster on a whole brain) and by TorchScript's plain interpreter rather than its
    profiling executor (faster for one call, bit-identical); on by default, ``DCFB_CPU_OPTIMIZE=0`` turns it
    off, and with it ``memory_reuse.keep_freed_memory``, which ``__main__`` applies, and the writing of the DICOM
    files in several processes). ``dicom_processes``: how many processes check the DICOM files read and write the
    DICOM slices; None, one per CPU (at most 4, ``forked_parts.available_processes``) with ``optimize_cpu``, else 1."""

    rules_file: Path = DEFAULT_RULES
    write_nifti: bool = False
    write_preview: bool = False
    pet_emphasis: float | None = None
    optimize_cpu: bool = True
    dicom_processes: int | None = None


def load_selection_rules(path: Path) -> dict:
    """The MR and PT series selection rules (SDK selector syntax) from a JSON file with keys ``MR`` and ``PT``."""
    try:
        rules = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FusionInputError(f"series selection rules {path} cannot be read: {err}") from err
    missing = [k for k in ("MR", "PT") if not isinstance(rules.get(k), dict) or "selections" not in rules[k]]
    if missing:
        raise FusionInputError(f"series selection rules {path} lack {' and '.join(missing)} "
                               "(each a {\"selections\": [...]} object)")
    return rules


class DCFBFusionApp(Application):
    """Fuses the T1 MR and FDG PT series of a DICOM study into new DICOM series in the MR's study."""

    def __init__(self, *args, options: FusionOptions | None = None, **kwargs):
        self.fusion_options = options or FusionOptions()
        super().__init__(*args, **kwargs)

    def compose(self):
        context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        rules = load_selection_rules(self.fusion_options.rules_file)

        dicom_processes = self.fusion_options.dicom_processes or (None if self.fusion_options.optimize_cpu else 1)
        # Built first: they refuse an unwritable output folder or an unreadable model before any DICOM is read.
        writer = FusedSeriesWriterOperator(self, output_folder=output_folder, write_nifti=self.fusion_options.write_nifti,
                                           write_preview=self.fusion_options.write_preview,
                                           processes=dicom_processes,
                                           name="fused_series_writer")
        inference = FusionInferenceOperator(self, model_path=Path(context.model_path),
                                            pet_emphasis=self.fusion_options.pet_emphasis,
                                            optimize_cpu=self.fusion_options.optimize_cpu, name="fusion_inference")
        writer.model_description = (f"DCFB network from bundle '{inference.bundle_dir.name}', "
                                    f"PET emphasis {inference.pet_emphasis:.2f}")
        writer.pet_emphasis = inference.pet_emphasis
        writer.runtime = {"device": str(inference.device), "cpu_optimized": inference.optimized}
        if memory_reuse.policy is not None:  # set by __main__ (python -m deploy_app, a MAP), not when main() is called
            logger.info("CPU memory: %s", memory_reuse.policy)
            writer.runtime["memory"] = memory_reuse.policy

        loader = CheckedDICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder,
                                                processes=dicom_processes, name="dicom_study_loader")
        mr_selector = DICOMSeriesSelectorOperator(self, rules=json.dumps(rules["MR"]), all_matched=True,
                                                  sort_by_sop_instance_count=True, name="mr_series_selector")
        pt_selector = DICOMSeriesSelectorOperator(self, rules=json.dumps(rules["PT"]), all_matched=True,
                                                  sort_by_sop_instance_count=True, name="pt_series_selector")
        mr_volume = SeriesVolumeOperator(self, label="MR", name="mr_volume")
        pt_volume = SeriesVolumeOperator(self, label="PT", name="pt_volume")
        alignment = PetMrAlignmentOperator(self, name="pet_to_mr_alignment")

        self.add_flow(loader, mr_selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(loader, pt_selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(mr_selector, mr_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(pt_selector, pt_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(mr_volume, alignment, {("image", "mr_image"), ("series", "mr_series")})
        self.add_flow(pt_volume, alignment, {("image", "pt_image"), ("series", "pt_series")})
        self.add_flow(alignment, inference, {("pair", "pair")})
        self.add_flow(inference, writer, {("result", "result")})


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def split_arguments(argv: list[str]) -> tuple[FusionOptions, list[str]]:
    """Take this app's own flags out of ``argv``; the rest go to the SDK's parser (-i, -o, -m, -l, -w)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--rules", type=Path, default=os.environ.get("DCFB_SELECTION_RULES", DEFAULT_RULES))
    parser.add_argument("--nifti", action="store_true", default=env_flag("DCFB_WRITE_NIFTI"))
    parser.add_argument("--preview", action="store_true", default=env_flag("DCFB_WRITE_PREVIEW"))
    parser.add_argument("--pet_emphasis", type=float, default=os.environ.get("DCFB_PET_EMPHASIS") or None)
    parser.add_argument("--dicom_processes", default=os.environ.get("DCFB_DICOM_PROCESSES") or None)
    ours, rest = parser.parse_known_args(argv[1:])
    processes = ours.dicom_processes
    if processes is not None and not (str(processes).isdigit() and int(processes) >= 1):
        parser.error(f"--dicom_processes (or DCFB_DICOM_PROCESSES) must be a whole number of at least 1, "
                     f"got {processes!r}")
    if ours.pet_emphasis is not None and not 0.0 <= float(ours.pet_emphasis) <= 1.0:
        parser.error(f"--pet_emphasis (or DCFB_PET_EMPHASIS) must be in [0, 1], got {ours.pet_emphasis}")
    emphasis = None if ours.pet_emphasis is None else float(ours.pet_emphasis)
    processes = None if processes is None else int(processes)
    options = FusionOptions(ours.rules, ours.nifti, ours.preview, emphasis, memory_reuse.cpu_fast_path_enabled(),
                            processes)
    return options, [argv[0], *rest]


def output_argument(sdk_argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output", "-o")
    known, _ = parser.parse_known_args(sdk_argv[1:])
    return Path(known.output or os.environ.get("HOLOSCAN_OUTPUT_PATH", "output"))


USAGE = """usage: python -m deploy_app -i DICOM_FOLDER -o OUTPUT_FOLDER -m BUNDLE_OR_MODEL_TS
                          [--nifti] [--preview] [--rules RULES.json] [--pet_emphasis L] [--dicom_processes N]
                          [-l LEVEL]
Without -i/-o/-m the SDK's HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH are used."""


STATUS_FILE = "fusion_status.json"


def write_status(output_folder: Path | None, status: str, exit_code: int, reason: str = "", log: str = "") -> None:
    """``OUT/fusion_status.json``: how the run ended, for a platform that cannot see the exit status (a MAP's
    entrypoint does not pass it on). No patient data: reasons name files, series and problems only."""
    if output_folder is None or not output_folder.is_dir():
        return
    record = {"status": status, "exit_code": exit_code, "reason": reason}
    if log:
        record["traceback_log"] = log
    try:
        (output_folder / STATUS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    except OSError:
        pass  # an output folder that cannot take a small file: the exit status and the log line still say it


def remove_partial_outputs(output_folder: Path | None) -> None:
    """A failed run leaves nothing in OUT but its status file: stages of an unfinished write go."""
    if output_folder is None or not output_folder.is_dir():
        return
    for stage in output_folder.glob(".dcfb-partial-*"):
        shutil.rmtree(stage, ignore_errors=True)


def traceback_log(error: BaseException) -> str:
    """Write the traceback of an internal error to the MAP's log folder (HOLOSCAN_LOGS_PATH) or the temp folder;
    returns the file's path."""
    text = "".join(traceback.format_exception(error))
    for folder in (os.environ.get("HOLOSCAN_LOGS_PATH"), tempfile.gettempdir()):
        if not folder:
            continue
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=folder, prefix="dcfb-fusion-error-", suffix=".log")
            with os.fdopen(fd, "w") as log:
                log.write(text)
            return path
        except OSError:
            continue
    return "(not written: no writable log folder)"


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns the exit status: 0 done, 1 input refused, 2 usage, 3 internal error. Each ends with one
    line on stderr and ``fusion_status.json`` in the output folder (when there is one)."""
    import sys

    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(USAGE)
        return 0
    options, sdk_argv = split_arguments(argv)
    output_folder = None
    try:
        # The SDK's parser makes a missing output folder itself and fails with a traceback when it cannot.
        output_folder = prepare_output_folder(output_argument(sdk_argv))
        # Holoscan's Application reads sys.argv itself (an argv list given to it loses its first item).
        sys.argv = sdk_argv
        DCFBFusionApp(options=options).run()
    except FusionInputError as err:
        logging.getLogger("deploy_app").error("refused: %s", err)
        print(f"dcfb-fusion: refused: {err}", file=sys.stderr)
        remove_partial_outputs(output_folder)
        write_status(output_folder, "refused", 1, str(err))
        return 1
    except SystemExit:
        raise  # usage errors from the SDK's own argument parser: exit status 2 with its message
    except BaseException as err:  # noqa: BLE001 - anything else is a bug: one line, the traceback to a file
        log = traceback_log(err)
        what = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        print(f"dcfb-fusion: internal error ({what}); traceback in {log}", file=sys.stderr)
        remove_partial_outputs(output_folder)
        write_status(output_folder, "failed", 3, f"internal error ({what})", log)
        return 3
    write_status(output_folder, "done", 0)
    return 0
