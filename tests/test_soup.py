"""`train.seeds`: one run per seed, then their average, in one `lpo-speech train`; finished members are
reused only when their settings match."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from conftest import REPO  # noqa: F401  (rootdir conftest)


def test_seeds_train_each_member_and_average_them(toy_world, lpo):
    out = lpo("train", "recipe.yaml", "train.seeds=[3, 5]", "train.max_steps=4", "train.out_dir=soup", "--quiet",
              cwd=toy_world)
    assert "the average of 2 runs" in out.stdout
    soup = toy_world / "soup"
    members = [load_file(str(soup / f"seed-{s}" / "model" / "model.safetensors")) for s in (3, 5)]
    avg = load_file(str(soup / "model" / "model.safetensors"))
    assert any(not torch.equal(members[0][k], members[1][k]) for k in avg)  # the seeds made different runs
    for k in avg:
        assert torch.allclose(avg[k], (members[0][k] + members[1][k]) / 2, atol=1e-6)
    # a member is exactly the run its seed gives alone
    lpo("train", "recipe.yaml", "train.seed=5", "train.max_steps=4", "train.out_dir=alone", "--quiet", cwd=toy_world)
    alone = load_file(str(toy_world / "alone" / "model" / "model.safetensors"))
    assert all(torch.equal(alone[k], members[1][k]) for k in alone)
    assert json.loads((soup / "model" / "merge.json").read_text())["models"][0].endswith("seed-3/model")

    again = lpo("train", "recipe.yaml", "train.seeds=[3, 5]", "train.max_steps=4", "train.out_dir=soup", "--quiet",
                cwd=toy_world)
    assert again.stdout.count("is finished, reused") == 2
    changed = lpo("train", "recipe.yaml", "train.seeds=[3, 5]", "train.max_steps=5", "train.out_dir=soup", "--quiet",
                  cwd=toy_world, check=False)
    assert changed.returncode == 2 and "made with other settings" in changed.stderr and "Traceback" not in changed.stderr
    bad = lpo("train", "recipe.yaml", "train.seeds=[3]", cwd=toy_world, check=False)
    assert bad.returncode == 2 and "train.seeds" in bad.stderr
