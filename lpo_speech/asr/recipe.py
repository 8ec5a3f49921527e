"""ASR recipe schema (`track: asr`): the shared sections (lpo_speech.recipe.TrackRecipe) plus `build_pairs`."""

from __future__ import annotations

from dataclasses import dataclass

from lpo_speech.recipe import TrackRecipe, require


@dataclass
class AsrBuildPairs:
    manifest: str  # the training utterances: a JSONL manifest {"id", "audio", "text"}, a datasets folder or
    #                hub id (hf:NAME), or a lhotse CutSet manifest (lpo_speech.asr.sources)
    work_dir: str  # candidates.jsonl, pairs.jsonl (before reference log-probs), summary.json; input/ (converted)
    text_column: str = "text"  # a dataset's transcript column
    audio_column: str = "audio"  # a dataset's audio column (an Audio feature or file paths)
    id_column: str | None = None  # a dataset's id column (default: <split>-<row>)
    split: str | None = None  # a dataset's split (default: its only split)
    lang: str = "en"  # normalization for WER/CER: en (words) | zh (characters)
    greedy: bool = True  # the model's greedy transcript as a candidate
    samples: int = 0  # model-based candidates per utterance (sampling)
    temperature: float = 1.0
    top_p: float = 1.0
    beams: int = 0  # beam search N-best candidates per utterance (0 = off)
    perturbations: int = 4  # perturbation-based candidates (the reference corrupted)
    perturb_rate: float = 0.15  # edits per word of the reference (at least one)
    chosen: str = "reference"  # reference (gold) | best (lowest-WER candidate)
    min_margin: float = 0.05  # a rejected candidate's WER must exceed the chosen's by this much
    max_pairs_per_utterance: int = 4
    max_ref_margin: float | None = None  # drop pairs with logp_ref(chosen) - logp_ref(rejected) above (paper: 2.0)
    batch_size: int = 8  # utterances per decoding batch
    seed: int = 0

    def validate(self) -> None:
        require(self.lang in ("en", "zh"), "build_pairs.lang", "en or zh")
        require(self.samples >= 0 and self.beams >= 0 and self.perturbations >= 0, "build_pairs.samples/beams/perturbations",
              "must be >= 0")
        require(self.greedy or self.samples or self.beams or self.perturbations, "build_pairs",
              "no candidate source: enable greedy, samples, beams or perturbations")
        require(self.temperature > 0 and 0 < self.top_p <= 1, "build_pairs.temperature/top_p", "temperature > 0, top_p in (0, 1]")
        require(0 < self.perturb_rate <= 1, "build_pairs.perturb_rate", "must be in (0, 1]")
        require(self.chosen in ("reference", "best"), "build_pairs.chosen", "reference or best")
        require(self.min_margin >= 0 and self.max_pairs_per_utterance >= 1, "build_pairs.min_margin/max_pairs_per_utterance",
              "margin >= 0, at least one pair")
        require(self.batch_size >= 1, "build_pairs.batch_size", "must be >= 1")
        require(bool(self.text_column.strip() and self.audio_column.strip()), "build_pairs.text_column/audio_column",
                "a column name")


@dataclass(kw_only=True)
class AsrRecipe(TrackRecipe):
    TRACK = "asr"
    ADAPTERS = ("whisper", "audio_llm")

    build_pairs: AsrBuildPairs

    def validate(self) -> None:
        super().validate()
        require(self.build_pairs.max_ref_margin is None or self.reference.source == "precomputed",
                "build_pairs.max_ref_margin", "needs reference.source: precomputed (the filter uses stored log-probs)")
