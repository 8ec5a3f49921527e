"""`train.seeds: [0, 1, 2]`: one training run per seed, then their weight average (a model soup).

Runs that differ only in seed (the order of the same pairs) agree on what the pairs teach and
disagree on what each picked up by chance; averaging keeps the first and dilutes the second
(Wortsman et al. 2022, "Model soups"; WARP, Ramé et al. 2024, averages aligned policies the same way).
On the offline emotion track, single runs churned failures on dev where their three-seed average did
not (results/emotion-sync-soup/README.md). It costs one training run per seed.

Layout: `<out_dir>/seed-<s>/` is a complete run folder per seed (its own config, curves,
checkpoints, model), `<out_dir>/model` the average (lpo_speech.merge), `<out_dir>/config.yaml` the
recipe. A rerun reuses each finished seed whose recorded config matches and resumes an interrupted one
with `--resume`; a finished seed made with other settings stops with one line.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml

from lpo_speech.recipe import TrainRecipe, save_recipe, to_dict
from lpo_speech.errors import UserError


def seed_recipe(recipe: TrainRecipe, seed: int) -> TrainRecipe:
    """The recipe of one member run: its seed, its own folder, no further seeds."""
    out = Path(recipe.train.out_dir) / f"seed-{seed}"
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=seed, seeds=[], out_dir=str(out)))


def train_soup(recipe: TrainRecipe, *, resume: bool = False, quiet: bool = False) -> Path:
    from lpo_speech.merge import merge_models
    from lpo_speech.trainer import train

    if recipe.model.lora is not None and recipe.model.lora.save == "adapter":
        raise UserError("a soup averages full weights: use model.lora.save merged or both", where="train.seeds")
    out = Path(recipe.train.out_dir)
    members = [seed_recipe(recipe, s) for s in recipe.train.seeds]
    for member in members:
        run = Path(member.train.out_dir)
        if (run / "model" / "config.json").is_file():
            recorded = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None
            if recorded != to_dict(member):
                raise UserError("a finished member run was made with other settings: use a new train.out_dir "
                                "or remove it", where=str(run))
            print(f"soup: {run} is finished, reused", flush=True)
            continue
        train(member, resume=resume and (run / "checkpoints").is_dir(), quiet=quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        save_recipe(recipe, out / "config.yaml")
        merge_models([Path(m.train.out_dir) / "model" for m in members], out / "model", overwrite=True)
    return out
