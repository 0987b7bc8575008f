"""``python -m deploy_app`` here, and ``python3 /opt/holoscan/app`` inside a MAP (the packager copies this
folder there under another name and runs the folder), both end in ``app.main()``."""

import atexit
import importlib
import logging
import os
import sys
import warnings

# What libraries print on every start of a CPU machine and tells a user nothing, silenced before they are imported,
# so that the log starts with what the app does: Holoscan's stack-size advice (the app's graph is three levels
# deep), MONAI's note that nvImageCodec (a GPU JPEG decoder) is absent, and MONAI's deprecation notices.
os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")  # Holoscan's own C++ log: graph start/stop and the same advice
warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai(\.|$)")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
logging.getLogger("monai.deploy.operators.decoder_nvimgcodec").setLevel(logging.ERROR)


class _NoGpuDecoderNotice(logging.Filter):
    """The SDK also says on the root logger that the (GPU) nvImageCodec decoder did not register."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "nvimgcodec decoder plugin did not register" not in record.getMessage()


logging.getLogger().addFilter(_NoGpuDecoderNotice())

if __package__:
    package = __package__
else:
    # Run as a folder: import it as the package it is, by its own name, from its parent folder.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))
    package = os.path.basename(here)

# Before torch and Holoscan are imported, so that their worker threads share the main arena (see the module).
memory_reuse = importlib.import_module(f"{package}.memory_reuse")
if __name__ == "__main__" and memory_reuse.cpu_fast_path_enabled():
    memory_reuse.keep_freed_memory()
app_module = importlib.import_module(f"{package}.app")

if __name__ == "__main__":
    status = app_module.main()
    # Every output is written, closed and moved into place by now. What is left is the interpreter's own teardown:
    # freeing the modules and C++ objects of PyTorch, MONAI and Holoscan, measured at 1.3 s of a 10.8 s run on the
    # sample study (scripts/benchmark_app.py), work that ends in the operating system reclaiming the memory anyway.
    # So: run the exit handlers (tempfile and multiprocessing clean-ups, logging's flush), flush, and leave.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
