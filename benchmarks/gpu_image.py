"""What the GPU machines' image holds, and an import hook that makes this environment look like it.

The GPU check (benchmarks/gpu_check.py) runs on a preinstalled image that reaches no package index
(Python 3.12, CUDA torch, transformers, peft, ...; /work/.library/device/KINDS.md, "Python packages
already there"). Code on the check's paths that imports a package outside that image fails there and
nowhere else, so tests/test_gpu_check.py runs the check with every such module hidden:

    python benchmarks/gpu_image.py /tmp/image-hook            # writes sitecustomize.py + blocked_modules.txt
    PYTHONPATH=/tmp/image-hook python benchmarks/gpu_check.py --device cpu --preset tiny

The hidden modules are computed, not listed by hand: every top-level module of a distribution installed
in the running environment whose name is not in IMAGE_PACKAGES (standard-library names and lpo_speech
itself excepted). Refreshing means pasting the image's package list into IMAGE_PACKAGES below.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOOK_SOURCE = HERE / "gpu_image_sitecustomize.py"
BLOCKED_FILE = "blocked_modules.txt"

# The image 'cuda' of nvidia-h100-x1 and nvidia-h200, as read on a machine running it on 2026-11-17
# (KINDS.md, pasted as it stands there).
IMAGE_PACKAGES_READ = "2026-11-17"
IMAGE_PACKAGES = """
absl-py, accelerate, aiofiles, aiohappyeyeballs, aiohttp, aiosignal, annotated-doc, anyio, attrs, botorch,
build, certifi, charset-normalizer, chex, click, cloudpickle, cmake, colorama, contourpy, coverage,
cuda-bindings, cuda-core, cuda-pathfinder, cuda-toolkit, cupy-cuda13x, cycler, cython, diffrax, e3nn, einops,
equinox, etils, execnet, filelock, flatbuffers, flax, fonttools, formulaic, frozenlist, fsspec, gpytorch,
grpcio, h11, h5py, hf-xet, httpcore, httpx, huggingface-hub, humanize, hypothesis, idna, imageio, iniconfig,
interface-meta, jax, jax-cuda13-pjrt, jax-cuda13-plugin, jaxlib, jaxtyping, jinja2, joblib, kiwisolver,
lazy-loader, lightning, lightning-utilities, linear-operator, lineax, llvmlite, lxml, markdown,
markdown-it-py, markupsafe, matplotlib, mdurl, meson, ml-dtypes, mpi4py, mpmath, msgpack, multidict,
multipledispatch, mypy-extensions, nanobind, narwhals, networkx, ninja, numba, numba-cuda, numpy, numpyro,
nvidia-cublas, nvidia-cuda-cupti, nvidia-cuda-nvrtc, nvidia-cuda-runtime, nvidia-cudnn-cu13, nvidia-cufft,
nvidia-cufile, nvidia-curand, nvidia-cusolver, nvidia-cusparse, nvidia-cusparselt-cu13, nvidia-ml-py,
nvidia-nccl-cu13, nvidia-nvjitlink, nvidia-nvshmem-cu13, nvidia-nvtx, onnx, onnx-ir, onnxruntime, onnxscript,
opencv-python-headless, optax, opt-einsum, opt-einsum-fx, optimistix, orbax-checkpoint, packaging, pandas,
pathspec, patsy, peft, pillow, pip, pluggy, portalocker, prometheus-client, propcache, protobuf, psutil,
pyarrow, pybind11, py-cpuinfo, pygments, pyparsing, pyproject-hooks, pyre-extensions, pytest,
pytest-benchmark, pytest-cov, pytest-mock, pytest-timeout, pytest-xdist, python-dateutil, pytorch-lightning,
pyyaml, regex, requests, rich, sacrebleu, safetensors, scikit-build-core, scikit-image, scikit-learn, scipy,
seaborn, sentencepiece, sentence-transformers, setuptools, shellingham, simplejson, six, sortedcontainers,
statsmodels, sympy, tabulate, tensorboard, tensorboard-data-server, tensorstore, threadpoolctl, tifffile,
tiktoken, timm, tokenizers, toolz, torch, torchaudio, torchdiffeq, torch-geometric, torchmetrics, torchvision,
tqdm, transformers, treescope, triton, typer, typing-extensions, typing-inspect, urllib3, uvloop,
wadler-lindig, werkzeug, wheel, wrapt, xarray, xxhash, yarl, zipp
"""
# Never hidden: the project itself (it runs from the checkout there) and the standard library (the
# 'typing' backport distribution, for one, names a standard module).
KEEP = {"lpo_speech"}


def normalize(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    return {normalize(p.strip()) for p in IMAGE_PACKAGES.replace("\n", " ").split(",") if p.strip()}


def top_level_modules(dist: importlib.metadata.Distribution) -> set[str]:
    """The importable top-level names a distribution installs: top_level.txt where it has one, and the
    first path component of every file its RECORD lists (wheels without top_level.txt, extension
    modules, packages a top_level.txt forgets)."""
    names = set((dist.read_text("top_level.txt") or "").split())
    for f in dist.files or []:
        head = f.parts[0]
        if head.endswith((".dist-info", ".egg-info", ".data")) or head in ("..", "__pycache__"):
            continue
        if len(f.parts) > 1:
            names.add(head)
        elif head.endswith((".py", ".so", ".pyd")):
            names.add(head.split(".")[0])
    return {n for n in names if n.isidentifier()}


def needed_by_image(dists: list) -> set[str]:
    """The image's distributions as installed here, and everything they need (transitively, extras
    left out). Installed versions here can be newer than the image's and need packages the image's
    versions do not (this venv's huggingface_hub imports httpx2, the image's does not): hiding those
    would break the image's own packages, a failure the image does not have."""
    from packaging.requirements import Requirement

    by_name = {normalize(d.metadata["Name"]): d for d in dists}
    todo = [n for n in image_packages() if n in by_name]
    seen = set(todo)
    while todo:
        for line in by_name[todo.pop()].requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = normalize(req.name)
            if name in by_name and name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def blocked_modules(distributions=None) -> list[str]:
    """Top-level modules of the installed distributions that neither the image nor what its packages
    need provide (a module that such a distribution also provides stays visible)."""
    dists = list(importlib.metadata.distributions() if distributions is None else distributions)
    keep = needed_by_image(dists)
    absent, present = set(), set()
    for dist in dists:
        (present if normalize(dist.metadata["Name"]) in keep else absent).update(top_level_modules(dist))
    return sorted(n for n in absent - present - KEEP - set(sys.stdlib_module_names)
                  if not n.startswith("__editable__"))


def write_hook(folder: Path, modules: list[str] | None = None) -> Path:
    """A folder to put first on PYTHONPATH: Python runs its sitecustomize.py at start-up, which hides
    the modules listed beside it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOOK_SOURCE, folder / "sitecustomize.py")
    names = blocked_modules() if modules is None else modules
    (folder / BLOCKED_FILE).write_text("\n".join(names) + "\n")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        raise SystemExit(2)
    out = write_hook(Path(sys.argv[1]))
    n = len((out / BLOCKED_FILE).read_text().split())
    print(f"{out}: sitecustomize.py hides {n} modules the GPU image lacks; PYTHONPATH={out} to use it")
