"""Start-up hook (copied as sitecustomize.py by benchmarks/gpu_image.py): hide the modules listed in
blocked_modules.txt beside this file, so this Python behaves as the GPU image does without them.

Every finder on sys.meta_path is wrapped so that a hidden top-level name (and anything under it) is not
found: `import soundfile` raises ModuleNotFoundError and importlib.util.find_spec("soundfile") is None,
exactly as on a machine without the package. (A finder that raised instead would also break the
find_spec probes with which transformers and others ask whether an optional package is there.)
Distribution metadata (importlib.metadata.version) stays visible; code that asks for a module's
version before its spec would see it, which none on the check's paths does.
"""

import sys
from pathlib import Path

_HIDDEN = frozenset((Path(__file__).resolve().parent / "blocked_modules.txt").read_text().split())


class _HidingFinder:
    """One meta path finder, minus the hidden names; every other call goes to the finder it wraps."""

    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _HIDDEN:
            return None
        find = getattr(self._inner, "find_spec", None)
        return find(name, path, target) if find else None

    def __getattr__(self, attr):  # invalidate_caches, find_distributions, ...
        return getattr(self._inner, attr)

    def __repr__(self):
        return f"<hiding {len(_HIDDEN)} modules: {self._inner!r}>"


sys.meta_path[:] = [_HidingFinder(f) for f in sys.meta_path]
