"""understudy: learn control policies from demonstrations, offline data, rewards and language, on JAX.

Quick use:
    import understudy
    policy = understudy.load_policy("runs/quickstart/sac/final")
    action = policy(obs)

Heavy submodules load on first use, so `import understudy` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_policy": ("understudy.policy", "load_policy"),
    "Policy": ("understudy.policy", "Policy"),
    "make": ("understudy.envs", "make"),
    "make_spec": ("understudy.envs", "make_spec"),
    "load_dataset": ("understudy.data", "load_dataset"),
    "save_dataset": ("understudy.data", "save_dataset"),
    "collect": ("understudy.data.collect", "collect"),
    "fit": ("understudy.cli", "train"),  # `understudy.train` is the package of training loops
    "RunArgs": ("understudy.train.common", "RunArgs"),
    "evaluate_policy": ("understudy.eval.rollouts", "evaluate_policy"),
    "quickstart": ("understudy.quickstart", "quickstart"),
    "QuickstartArgs": ("understudy.quickstart", "QuickstartArgs"),
    "EnvSpec": ("understudy.types", "EnvSpec"),
    "UnderstudyError": ("understudy.types", "UnderstudyError"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'understudy' has no attribute {name!r}")
