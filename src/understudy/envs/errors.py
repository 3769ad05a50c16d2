"""User-facing errors for the envs package.

`understudy.types` pulls in flax (about a second), so it is imported only when an error is raised or a
spec is built; that keeps `import understudy.envs` fast.
"""

from __future__ import annotations


def user_error(message: str) -> Exception:
    """An `understudy.types.UnderstudyError` carrying `message` (raise the result)."""
    from understudy.types import UnderstudyError

    return UnderstudyError(message)
