"""DAgger (Ross, Gordon & Bagnell 2011): behaviour cloning on states the learner itself visits, labelled by an
expert.

Iteration i rolls out the mixture π_i = β_i·expert + (1 − β_i)·learner (the expert acts at each step with
probability β_i, per step), relabels every visited state with the expert's action, adds those pairs to the
aggregated dataset and trains the learner on all of it. β_i = 1/(1+i): iteration 0 is pure expert (skipped
when --dataset supplies expert demonstrations, which then are D_0). The expert is any policy export.

The learner is BC: this module reuses `bc`'s State, update, act and export, with DAgger's settings added to
its Config. The loop is `understudy.train.interactive`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from understudy.algos import bc
from understudy.algos.bc import State, act, evaluate_loss, init, policy_export, update

__all__ = ["Config", "State", "init", "update", "act", "evaluate_loss", "policy_export", "beta_at", "method_name"]


@dataclasses.dataclass(frozen=True)
class Config(bc.Config):
    """DAgger settings (the learner's are BC's)."""

    expert: Optional[str] = None
    """Expert policy export (experts/<ENV_ID>, a run's final/, ...). Required."""
    steps_per_iteration: int = 4000
    """Environment steps rolled out per iteration (per seed); --steps / this = the number of iterations."""
    updates_per_iteration: int = 2000
    """Learner gradient updates after each aggregation."""
    beta: Literal["inverse", "zero"] = "inverse"
    """Expert mixing: 'inverse' β_i = 1/(1+i); 'zero' β_i = 0 after iteration 0 (the learner alone)."""
    reinitialize: bool = False
    """Train the learner from scratch each iteration (default: continue from the previous iteration)."""
    stochastic_expert: bool = False
    """Label states with samples from the expert instead of its mode."""


def beta_at(cfg: Config, iteration: int) -> float:
    """Probability that the expert acts at a step of iteration `iteration` (0-based)."""
    if iteration == 0:
        return 1.0
    return 1.0 / (1.0 + iteration) if cfg.beta == "inverse" else 0.0


def method_name(cfg: Config) -> str:
    return f"dagger-{cfg.head}"
