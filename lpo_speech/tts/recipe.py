"""TTS recipe schema (`track: tts`): the shared sections (lpo_speech.recipe.TrackRecipe) plus `build_pairs`.

`build_pairs` says how candidates are drawn from the codec LM (`model.path`), how they are scored
(ASR judge, speaker similarity, DNSMOS, stability flags: lpo_speech.tts.scoring) and which rules
select chosen/rejected pairs (lpo_speech.tts.pairs documents each rule). `build_pairs.lang` is the
prompts' language, as in the ASR track: en (WER over words) or zh (CER over characters, the
failure rule and speaking-rate bounds by character, a Whisper judge told the language).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lpo_speech.recipe import TrackRecipe, require

# Score name -> +1 when higher is better, -1 when lower is better.
SCORE_DIRECTIONS = {"failure": -1, "wer": -1, "cer": -1, "sim": 1, "dnsmos": 1, "emotion": 1}
LANGS = ("en", "zh")
WHISPER_JUDGES = ("faster-whisper", "transformers-whisper")  # judges that take a `language`


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class TtsBuildPairs:
    prompts: str  # TTS prompt manifest of the training prompts: {"id", "text", ...}
    work_dir: str  # candidates.jsonl, pairs.jsonl (before reference log-probs), summary.json
    lang: str = "en"  # the prompts' language: en (WER over words) | zh (CER over characters)
    gold: str | None = None  # examples with the gold codec tokens (make-tts-data's train.jsonl); chosen: gold
    limit: int = 0  # use the first N prompts only (0 = all): candidates cost a synthesis and a judge call each
    samples: int = 4  # sampled candidates per prompt
    greedy: bool = False  # the greedy synthesis as one more candidate
    perturbations: int = 0  # perturbation-based candidates: a corrupted text rendered like the gold (offline world)
    perturb_rate: float = 0.15  # word edits per word of the text (at least one)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_seconds: float = 12.0  # length guard (also seconds_per_char x characters + 1 s)
    seconds_per_char: float = 0.15
    chosen: str = "best"  # best (best-ranked candidate) | gold (the prompt's gold tokens, scored too) | rendered (the text rendered now like the gold)
    selection: str = "lexicographic"  # lexicographic | pareto
    keys: list[str] = field(default_factory=lambda: ["failure", "cer", "sim"])  # ranking keys, in order
    max_chosen_cer: float | None = 0.3  # a prompt whose chosen CER is above this gives no pair
    chosen_stable: bool = True  # chosen must be terminated, decodable, in duration range, no long silence
    min_margins: dict[str, float] = field(default_factory=lambda: {"cer": 0.1})  # rejected worse by at least this
    margin_rule: str = "all"  # all: worse by its margin on every score listed; any: on at least one of them
    max_chosen_deficit: dict[str, float] = field(default_factory=dict)  # chosen worse than the rejected by at most this
    max_duration_s: float | None = None  # candidates longer than this are dropped
    max_length_ratio: float | None = None  # a rejected more than this many times longer or shorter than the chosen is not paired
    pairs_per_prompt: int = 1  # worst rejected first
    max_ref_margin: float | None = None  # drop pairs with logp_ref(chosen) - logp_ref(rejected) above this
    judge: dict[str, Any] | None = field(default_factory=lambda: {"type": "faster-whisper", "model": "bundled"})
    similarity: bool = True
    dnsmos: bool = False  # ~1 s per clip on 2 CPU cores; enable to rank or filter on it
    emotion: dict[str, Any] | None = None  # emotion scorer (lpo_speech.judges.emotion): score `emotion`
    batch_size: int = 16  # sequences per sampling batch
    prompts_per_shard_step: int = 8  # prompts per resumable unit of work
    seed: int = 0

    def validate(self) -> None:
        require(self.lang in LANGS, "build_pairs.lang", f"en or zh, got {self.lang!r}")
        judge = self.judge or {}
        kind = judge.get("type", "faster-whisper")
        require(kind not in WHISPER_JUDGES or judge.get("language") in (None, self.lang), "build_pairs.judge.language",
              f"must be build_pairs.lang ({self.lang}) or left out (the judge is given build_pairs.lang)")
        require(self.judge is None or self.lang == "en" or (kind, judge.get("model", "bundled")) != ("faster-whisper", "bundled"),
              "build_pairs.judge", "the bundled Whisper tiny.en transcribes English only: name a judge of "
              f"build_pairs.lang ({self.lang}), e.g. {{type: funasr, model: paraformer-zh}}")
        require(self.samples >= 0 and self.perturbations >= 0, "build_pairs.samples/perturbations", "must be >= 0")
        require(self.samples > 0 or self.greedy or self.perturbations > 0, "build_pairs.samples/greedy/perturbations",
              "need a candidate source (samples >= 1, greedy or perturbations >= 1)")
        require(0 < self.perturb_rate <= 1, "build_pairs.perturb_rate", "must be in (0, 1]")
        require(self.perturbations == 0 or self.chosen in ("gold", "rendered"), "build_pairs.perturbations",
              "perturbation-based candidates are rendered like the gold: they need chosen: gold or rendered")
        require(self.limit >= 0, "build_pairs.limit", "must be >= 0")
        require(self.temperature > 0 and 0 < self.top_p <= 1 and self.top_k >= 0, "build_pairs.temperature/top_p/top_k",
              "temperature > 0, top_p in (0, 1], top_k >= 0")
        require(self.max_seconds > 0 and self.seconds_per_char > 0, "build_pairs.max_seconds/seconds_per_char", "> 0")
        require(self.chosen in ("best", "gold", "rendered"), "build_pairs.chosen", "best, gold or rendered")
        require(self.chosen != "gold" or self.gold is not None, "build_pairs.gold", "needed for chosen: gold")
        require(self.selection in ("lexicographic", "pareto"), "build_pairs.selection", "lexicographic or pareto")
        require(all(k in SCORE_DIRECTIONS for k in self.keys) and (bool(self.keys) or self.judge is None),
              "build_pairs.keys", f"non-empty, from {sorted(SCORE_DIRECTIONS)}")
        unscored = (self.chosen in ("gold", "rendered") and not self.keys and not self.min_margins and not self.max_chosen_deficit
                    and self.max_chosen_cer is None and not self.chosen_stable and not self.similarity
                    and not self.dnsmos and self.emotion is None)
        require(self.judge is not None or unscored, "build_pairs.judge",
              "null (unscored candidates) needs chosen: gold or rendered and no score rules: keys: [], min_margins: {}, "
              "max_chosen_deficit: {}, max_chosen_cer: null, chosen_stable: false, similarity: false, "
              "dnsmos: false, emotion: null")
        require(all(k in SCORE_DIRECTIONS and _finite(v) and v >= 0 for k, v in self.min_margins.items()),
              "build_pairs.min_margins", f"score -> finite margin >= 0, scores from {sorted(SCORE_DIRECTIONS)}")
        require(self.margin_rule in ("all", "any"), "build_pairs.margin_rule", "all or any")
        require("sim" not in self.keys + list(self.min_margins) or self.similarity, "build_pairs.similarity",
              "must be true when ranking on sim")
        require("dnsmos" not in self.keys + list(self.min_margins) or self.dnsmos, "build_pairs.dnsmos",
              "must be true when ranking on dnsmos")
        require(all(k in SCORE_DIRECTIONS and _finite(v) and v >= 0 for k, v in self.max_chosen_deficit.items()),
              "build_pairs.max_chosen_deficit",
              f"score -> finite allowed deficit >= 0, scores from {sorted(SCORE_DIRECTIONS)}")
        require("emotion" not in self.keys + list(self.min_margins) + list(self.max_chosen_deficit)
              or self.emotion is not None, "build_pairs.emotion",
              "an emotion scorer is needed to rank on emotion (e.g. {type: prosody, path: ...})")
        require(self.emotion is None or self.emotion.get("type") in ("prosody", "emotion2vec"), "build_pairs.emotion.type",
              "prosody or emotion2vec")
        require(self.max_length_ratio is None or self.max_length_ratio >= 1, "build_pairs.max_length_ratio",
              "null or >= 1 (longer / shorter duration of the pair)")
        require(self.max_chosen_cer is None or self.max_chosen_cer >= 0, "build_pairs.max_chosen_cer", ">= 0")
        require(self.pairs_per_prompt >= 1 and self.batch_size >= 1 and self.prompts_per_shard_step >= 1,
              "build_pairs.pairs_per_prompt/batch_size/prompts_per_shard_step", "must be >= 1")


@dataclass(kw_only=True)
class TtsRecipe(TrackRecipe):
    TRACK = "tts"
    ADAPTERS = ("causal_lm",)

    build_pairs: TtsBuildPairs
