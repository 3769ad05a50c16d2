"""Algorithms: one module per algorithm, each with Config, State, init, update, act, policy_export.

Modules are imported on demand (`get_algorithm("sac")`) so importing the package stays cheap and the heads,
which use `understudy.algos.losses`, do not import every algorithm.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from understudy.types import UnderstudyError

# CLI name -> module path. Later algorithms add an entry here.
ALGORITHMS: dict[str, str] = {
    "sac": "understudy.algos.sac",
    "bc": "understudy.algos.bc",
}


def get_algorithm(name: str) -> ModuleType:
    """The algorithm module registered as `name`."""
    if name not in ALGORITHMS:
        raise UnderstudyError(f"Unknown algorithm {name!r}. Available: {', '.join(sorted(ALGORITHMS))}.")
    return importlib.import_module(ALGORITHMS[name])


__all__ = ["ALGORITHMS", "get_algorithm"]
