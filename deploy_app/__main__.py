"""``python -m deploy_app`` here, and ``python3 /opt/holoscan/app`` inside a MAP (the packager copies this
folder there under another name and runs the folder), both end in ``app.main()``."""

import importlib
import os
import sys

if __package__:
    app_module = importlib.import_module(f"{__package__}.app")
else:
    # Run as a folder: import it as the package it is, by its own name, from its parent folder.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))
    app_module = importlib.import_module(f"{os.path.basename(here)}.app")

if __name__ == "__main__":
    sys.exit(app_module.main())
