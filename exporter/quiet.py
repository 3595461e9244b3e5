"""What the libraries print on their own: quiet by default on the command line, shown with ``--verbose``.

transformers draws a "Loading weights" progress bar for a load that takes a fraction of a second (garbled in a log
file) and warns about training-only settings such as ``loss_type`` on an encoder that is never trained here.
tei-export reports its own progress and every real problem as an error, so these add nothing for a user. The hub's
download bars go too: transformers takes its bar setting from huggingface_hub's when it is imported, so one switch
covers both; ``--verbose`` brings them back, e.g. to watch a large download.
"""
from __future__ import annotations

import os
import sys

# Read by transformers and huggingface_hub when they are imported; a value the user set is kept.
QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def quiet_libraries() -> None:
    """Silence transformers' and huggingface_hub's warnings and progress bars in this process (errors still show).

    Cheap enough for ``--help``: it imports nothing, and only switches the libraries off directly when they are
    already imported (the environment is read at import only).
    """
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()  # huggingface_hub's bars too
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
