"""Slow learning check for the language issue: the mountaincar-language study on its defaults (~11 min on 2 cores)."""

import pytest


@pytest.mark.slow
def test_mountaincar_language_study_meets_the_targets(tmp_path):
    from understudy.studies.mountaincar_language import StudyArgs, run_study

    results = run_study(StudyArgs(out=str(tmp_path / "study"), env_reward_baseline=False, progress=False))
    assert results["reward_model"]["held_out"]["pairwise_accuracy"] >= 0.95
    rates = {name: per_seed[0] for name, per_seed in results["behaviour"].items()}
    assert rates["sentence-top"]["success_rate"] >= 0.9
    assert rates["sentence-bottom"]["rates"]["bottom"] >= 0.9 and rates["sentence-bottom"]["rates"]["top"] == 0
    assert rates["sentence-swing"]["rates"]["swing"] >= 0.7
