"""Precompute reference log-probs into the pair file, so training holds no reference model.

Each process (torchrun) scores its shard of the pairs into its own resumable part file; the main
process then merges the parts in the input's order into one atomic output. Optional filter from the
LPO authors' pipeline: drop pairs whose reference already prefers the chosen side by more than
`max_margin` (logp_ref(chosen) - logp_ref(rejected) > max_margin): they carry little signal.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from lpo_speech.adapters import load_adapter
from lpo_speech.config import TrainRecipe
from lpo_speech.distributed import barrier, init_distributed, shard
from lpo_speech.records import JsonlWriter, PreferencePair, load_jsonl, read_jsonl, write_jsonl_atomic
from lpo_speech.trainer import _autocast, ref_logp_mode


def compute_ref_logps(recipe: TrainRecipe, in_path: str | Path, out_path: str | Path, *, batch_size: int = 8,
                      max_margin: float | None = None, quiet: bool = False) -> dict[str, int]:
    info = init_distributed(recipe.train.device)
    out_path = Path(out_path)
    pairs = load_jsonl(in_path, PreferencePair)
    adapter = load_adapter(recipe.model)
    adapter.average = recipe.loss.average_logps
    model = adapter.load(recipe.model.path, info.device).eval()
    bf16 = recipe.model.dtype == "bfloat16" or (recipe.model.dtype == "auto" and info.device.type == "cuda")
    mode = ref_logp_mode(recipe)

    part = out_path.with_name(f"{out_path.name}.rank{info.rank}of{info.world}")
    mine = shard(list(enumerate(pairs, 1)), info.rank, info.world)
    with JsonlWriter(part) as writer:
        todo = [(line, p) for line, p in mine if p.id not in writer.done]
        items = [(p, adapter.encode(p, f"{in_path}:{line}")) for line, p in todo]
        items.sort(key=lambda x: adapter.length(x[1]))  # similar lengths per batch: less padding
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"ref-logps[{info.rank}]", unit="pair",
                   disable=quiet, dynamic_ncols=True)
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            batch = {k: v.to(info.device) for k, v in adapter.collate([it for _, it in chunk]).items()}
            with torch.no_grad(), _autocast(info.device, bf16):
                out = model(batch)
            for (pair, _), c, r in zip(chunk, out.chosen.float().tolist(), out.rejected.float().tolist()):
                pair.ref_chosen_logp, pair.ref_rejected_logp = c, r
                pair.extra["ref_logp_mode"] = mode
                writer.write(pair)
            bar.update(len(chunk))
        bar.close()
    barrier()
    stats = {"pairs": len(pairs), "kept": 0, "dropped_margin": 0}
    if info.is_main:
        scored = {}
        for r in range(info.world):
            p = out_path.with_name(f"{out_path.name}.rank{r}of{info.world}")
            scored.update({x.id: x for x in read_jsonl(p, PreferencePair)})
        kept = []
        for pair in pairs:
            s = scored[pair.id]
            if max_margin is not None and s.ref_chosen_logp - s.ref_rejected_logp > max_margin:
                stats["dropped_margin"] += 1
                continue
            kept.append(s)
        write_jsonl_atomic(out_path, kept)
        stats["kept"] = len(kept)
        for r in range(info.world):
            out_path.with_name(f"{out_path.name}.rank{r}of{info.world}").unlink(missing_ok=True)
    barrier()
    return stats
