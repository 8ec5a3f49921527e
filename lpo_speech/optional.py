"""Packages imported where they are used, not when lpo_speech is imported.

Training, reference log-probs, sampling and online training run on machines that hold torch,
transformers and peft but none of the speech stack (no soundfile, jiwer, soxr, Codec2, ...: the GPU
image of benchmarks/gpu_check.py). Modules on those paths therefore import audio and speech packages
inside the functions that need them, through `require`, so a package that is missing at the point of
use stops the run with one line naming it instead of a traceback at import time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lpo_speech.errors import UserError


def require(module: str, *, needed_for: str, package: str | None = None) -> ModuleType:
    """`import module`, or a UserError naming the pip package (`package`, default the module's top
    name) and what needed it. An installed package whose own import fails (soundfile without cffi or
    libsndfile) says why in the same line."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as e:
        name = package or module.split(".")[0]
        top = module.split(".")[0]
        missing = getattr(e, "name", None)
        why = ("not installed" if isinstance(e, ModuleNotFoundError) and missing in (module, top)
               else f"its import failed: {' '.join(str(e).split())}")
        raise UserError(f"{needed_for} needs the Python package '{name}' ({why}; pip install {name})") from None
