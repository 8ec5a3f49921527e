"""`lpo-speech sft-pairs`: an ASR manifest as chosen-only SFT examples, and Whisper SFT on them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import espeak_wav


def test_sft_pairs_keep_text_and_audio_and_train_whisper(tmp_path, lpo, whisper_tiny):
    data = tmp_path / "data"
    (data / "wavs").mkdir(parents=True)
    texts = ["turn the kitchen lights off", "the farmer sells eggs twice a week"]
    with (data / "train.jsonl").open("w") as f:
        for i, t in enumerate(texts):
            espeak_wav(data / "wavs" / f"u{i}.wav", t)
            f.write(json.dumps({"id": f"u{i}", "audio": f"wavs/u{i}.wav", "text": t}) + "\n")
    out = tmp_path / "sft" / "train_sft.jsonl"
    proc = lpo("sft-pairs", str(data / "train.jsonl"), str(out), cwd=tmp_path)
    assert "2 SFT examples" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["chosen_text"] for r in rows] == texts and all(r.get("rejected_text") is None for r in rows)
    assert all((out.parent / r["audio"]).resolve() == (data / "wavs" / f"u{i}.wav").resolve() for i, r in enumerate(rows))

    again = lpo("sft-pairs", str(data / "train.jsonl"), str(out), cwd=tmp_path, check=False)
    assert again.returncode == 2 and "exists" in again.stderr and again.stderr.count("\n") == 1

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"model: {{path: {whisper_tiny}, adapter: whisper, freeze_encoder: true}}\n"
                      f"data: {{pairs: {out}}}\n"
                      "loss: {type: sft, sft_weight: 1.0, gamma: 0.0}\n"
                      "train: {out_dir: run, lr: 1.0e-5, warmup_steps: 0, max_steps: 2, batch_size: 2}\n")
    lpo("train", str(recipe), cwd=tmp_path)
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(s["chosen_nll"] > 0 for s in steps)
    assert Path(tmp_path / "run" / "model" / "model.safetensors").exists()
