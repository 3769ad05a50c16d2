"""Learning checks (minutes each): run with `python -m pytest -m slow`."""

import pytest

from understudy.quickstart import QuickstartArgs, quickstart


@pytest.mark.slow
def test_quickstart_learns_pendulum(tmp_path):
    result = quickstart(QuickstartArgs(out=str(tmp_path / "qs"), progress=False))
    assert result["sac"] >= -200, result
    assert result["bc_normalized"] >= 0.9, result
    assert (tmp_path / "qs" / "report.md").exists()
