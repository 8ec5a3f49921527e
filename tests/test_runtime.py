"""The placement rule (lpo_speech.distributed.resolve_device) as a pure function of the request, the
launcher's LOCAL_RANK and the number of visible GPUs, and the stages' use of it.

These machines have no GPU, so the GPU cases pass a fake visible count (`cuda_count`) and a fake
launcher environment (`env`); that is the rule's own pure interface, not a patched torch. Real model
placement on CPU is tested where each stage runs (runtime.json of build-pairs and eval)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lpo_speech.distributed import resolve_device
from lpo_speech.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def rule(requested: str, *, local_rank: int | None = None, gpus: int = 0) -> torch.device:
    env = {} if local_rank is None else {"LOCAL_RANK": str(local_rank)}
    return resolve_device(requested, env=env, cuda_count=gpus)


def test_auto_takes_the_local_ranks_gpu_or_the_cpu():
    assert rule("auto", gpus=0) == torch.device("cpu")
    assert rule("auto", local_rank=3, gpus=0) == torch.device("cpu")  # no GPU: every rank on the CPU
    assert rule("auto", gpus=2) == torch.device("cuda:0")  # no launcher: rank 0
    assert rule("auto", local_rank=3, gpus=8) == torch.device("cuda:3")
    assert rule("cuda", local_rank=5, gpus=8) == torch.device("cuda:5")


def test_cpu_and_a_named_gpu_are_taken_as_asked():
    assert rule("cpu", local_rank=3, gpus=8) == torch.device("cpu")
    assert rule("cuda:1", local_rank=0, gpus=2) == torch.device("cuda:1")  # e.g. a judge on another card


@pytest.mark.parametrize("requested, local_rank, gpus, message", [
    ("auto", 2, 2, "LOCAL_RANK 2 but only 2 CUDA device(s) visible: launch at most 2 processes per node"),
    ("cuda", None, 0, "cuda: no CUDA device is visible (use auto or cpu)"),
    ("cuda:2", None, 2, "cuda:2: only 2 CUDA device(s) visible"),
    ("gpu", None, 1, "'gpu': expected auto, cpu, cuda or cuda:N"),
    ("cuda:x", None, 1, "'cuda:x': expected auto, cpu, cuda or cuda:N"),
    ("CUDA", None, 1, "'CUDA': expected auto, cpu, cuda or cuda:N"),
    ("", None, 1, "'': expected auto, cpu, cuda or cuda:N"),
])
def test_impossible_placements_are_one_line(requested, local_rank, gpus, message):
    with pytest.raises(UserError) as e:
        rule(requested, local_rank=local_rank, gpus=gpus)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_shipped_recipe_places_rank_r_on_gpu_r():
    """What build-pairs and eval resolve (runtime.device; runtime.judge_device, null = the device) puts
    local rank 3 of an 8-GPU node on cuda:3, model and judges alike (fake count: see the module)."""
    from lpo_speech.recipe import load_any_recipe

    recipes = sorted((REPO / "recipes").glob("*/*.yaml"))
    assert recipes
    for path in recipes:
        runtime = load_any_recipe(path).runtime
        env = {"LOCAL_RANK": "3"}
        assert resolve_device(runtime.device, env=env, cuda_count=8) == torch.device("cuda:3"), path
        judge = runtime.judge_device or runtime.device
        assert resolve_device(judge, env=env, cuda_count=8) == torch.device("cuda:3"), path


def test_a_judge_specs_own_device_wins_and_faster_whisper_takes_the_index_apart():
    """The scorer's judge device is only a default: a judge spec naming `device: cpu` runs on the CPU
    even when the judge device is a GPU (no model is loaded: judges load on the first transcribe)."""
    from lpo_speech.judges.asr import FasterWhisperJudge
    from lpo_speech.tts.scoring import TtsScorer

    scorer = TtsScorer(judge={"type": "faster-whisper", "model": "bundled", "device": "cpu"}, device="cuda:1")
    judge = scorer.asr_judge()  # built on first use, nothing loaded yet
    assert (judge.device, judge.device_index) == ("cpu", 0)
    assert scorer.judge == {"type": "faster-whisper", "model": "bundled", "device": "cpu"}  # the spec stays as given
    with pytest.raises(UserError, match="faster-whisper judge: device: 'gpu0': expected auto, cpu, cuda or cuda:N"):
        FasterWhisperJudge(device="gpu0")
