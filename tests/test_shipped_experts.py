"""The shipped experts (experts/<ENV_ID>/) agree with their expert.json: the recipes and studies read both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from understudy import load_policy

EXPERTS = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "experts").glob("*/expert.json"))


def test_experts_are_found():
    assert len(EXPERTS) >= 8  # Pendulum, the four MuJoCo envs, MountainCarContinuous, walker-walk, walker-run


@pytest.mark.parametrize("expert", EXPERTS, ids=lambda p: p.name)
def test_expert_json_matches_its_export_and_medium_snapshot(expert: Path):
    info = json.loads((expert / "expert.json").read_text())
    assert info["env_id"] == expert.name
    assert info["mean"] == pytest.approx(float(np.mean(info["returns"])), abs=1e-6)
    assert len(info["returns"]) == 100
    assert load_policy(expert).spec.env_id == expert.name

    # the medium snapshot is the one expert.json describes (a replaced snapshot must update both)
    medium = load_policy(expert / info["medium"]["path"])
    assert medium.spec.env_id == expert.name
    recorded = medium.metadata["eval_return"]
    assert recorded == pytest.approx(info["medium"]["eval_return_10_episodes"], abs=0.01)
    assert f"step_{medium.metadata['step']}" in info["medium"]["source"]
