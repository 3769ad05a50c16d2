"""Algorithms: one module per algorithm, each with Config, State, init, update, act, policy_export.

Modules are imported on demand (`get_algorithm("sac")`) so importing the package stays cheap and the heads,
which use `understudy.algos.losses`, do not import every algorithm.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from understudy.types import UnderstudyError

# CLI name -> (module path, training loop in understudy.train, one-line description). The one registry:
# `understudy train ALGO` and get_algorithm both read it.
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "sac": ("understudy.algos.sac", "off_policy",
            "Soft Actor-Critic: tanh-Gaussian actor, twin critics, automatic temperature (online)"),
    "ppo": ("understudy.algos.ppo", "on_policy",
            "Proximal policy optimization: GAE, clipped objective, observation/reward normalization saved with the "
            "policy (online; continuous and discrete)"),
    "bc": ("understudy.algos.bc", "offline",
           "Behaviour cloning from a dataset with an action head (--head mse|gaussian|...)"),
}


def get_algorithm(name: str) -> ModuleType:
    """The algorithm module registered as `name`."""
    if name not in ALGORITHMS:
        raise UnderstudyError(f"Unknown algorithm {name!r}. Available: {', '.join(sorted(ALGORITHMS))}.")
    return importlib.import_module(ALGORITHMS[name][0])


__all__ = ["ALGORITHMS", "get_algorithm"]
