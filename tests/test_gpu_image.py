"""benchmarks/gpu_image.py: the list of modules the GPU image lacks, and the start-up hook that hides them.

A hidden module must fail to import exactly as a missing one does (ModuleNotFoundError, find_spec None),
while the image's own packages keep working; then every lpo_speech module imports under the hook, and
a missing package at the point of use is one line naming it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_image  # noqa: E402


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    return gpu_image.write_hook(tmp_path_factory.mktemp("image-hook"))


def run_hidden(hook, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_blocklist_is_what_the_venv_has_beyond_the_image():
    blocked = set(gpu_image.blocked_modules())
    # the speech stack the GPU image lacks (REFERENCE.md section 8, KINDS.md's list)
    assert {"soundfile", "cffi", "jiwer", "librosa", "soxr", "zhconv", "snac", "funasr", "piper", "pycodec2",
            "faster_whisper", "ctranslate2", "resemblyzer"} <= blocked
    # the image's packages, what they need at the versions installed here, the standard library, us
    assert not blocked & {"torch", "transformers", "peft", "accelerate", "safetensors", "numpy", "scipy", "yaml",
                          "tqdm", "matplotlib", "sklearn", "huggingface_hub", "typing", "lpo_speech", "pip"}
    image = gpu_image.image_packages()
    assert {"torch", "torchaudio", "scikit-learn", "pyyaml", "huggingface-hub", "zipp", "absl-py"} <= image
    assert len(image) == 197  # KINDS.md's list as read on 2026-11-17
    # every hidden name belongs to a distribution installed here that the image lacks
    owners = {}
    for dist in importlib.metadata.distributions():
        for name in gpu_image.top_level_modules(dist):
            owners.setdefault(name, set()).add(gpu_image.normalize(dist.metadata["Name"]))
    assert all(owners[name] - image for name in blocked)


def test_distributions_the_image_packages_need_here_stay_visible():
    """huggingface_hub as installed here imports httpx2; the image's version does not, and hiding it
    would break transformers, a failure the image does not have."""
    needed = gpu_image.needed_by_image(list(importlib.metadata.distributions()))
    if "httpx2" in {gpu_image.normalize(d.metadata["Name"]) for d in importlib.metadata.distributions()}:
        assert "httpx2" in needed and "httpx2" not in gpu_image.blocked_modules()
    assert "soundfile" not in needed and "jiwer" not in needed


def test_the_hook_hides_modules_as_if_missing(hook):
    res = run_hidden(hook, """
import importlib.util
assert importlib.util.find_spec("soundfile") is None and importlib.util.find_spec("jiwer") is None
for name in ("soundfile", "jiwer", "soxr", "pycodec2", "piper", "librosa"):
    try:
        __import__(name)
    except ModuleNotFoundError as e:
        assert e.name == name, e
    else:
        raise SystemExit(f"{name} imported under the hook")
import torch, transformers, peft, numpy, yaml  # the image's own
print("ok")
""")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_every_lpo_speech_module_imports_on_the_image(hook):
    res = run_hidden(hook, """
import importlib, pkgutil, lpo_speech
bad = []
for m in pkgutil.walk_packages(lpo_speech.__path__, "lpo_speech."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        bad.append(f"{m.name}: {type(e).__name__}: {e}")
print("\\n".join(bad) or "ok")
""")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr[-3000:]


def test_a_missing_package_at_its_point_of_use_is_one_line(hook):
    res = run_hidden(hook, """
import numpy as np
from lpo_speech.errors import UserError
from lpo_speech.tts.codecs import make_codec
from lpo_speech.wer import utterance_errors
codec = make_codec("codec2:700C")  # its layout needs no library: sampling a Codec2 model's tokens works
for call in (lambda: utterance_errors("a b", "a c"), lambda: codec.decode(np.zeros((2, 4), dtype=np.int64))):
    try:
        call()
    except UserError as e:
        print(e)
""")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines() == [
        "word and character error rates needs the Python package 'jiwer' (not installed; pip install jiwer)",
        "encoding and decoding Codec2 (codec2-700C) needs the Python package 'pycodec2' (not installed; "
        "pip install pycodec2)"]
