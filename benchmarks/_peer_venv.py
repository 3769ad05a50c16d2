"""Creates or reuses a peer's virtual environment (benchmarks/.venv-NAME) for side-by-side benchmarks.

Peers pin other gymnasium/jax/stable-baselines3 versions than ours, and than each other, so each group of
peers lives in its own named environment; a benchmark runs their measurement in a subprocess there. An
environment is rebuilt when its requirements change (they are stamped into it).

    ensure_peer_venv()                    # benchmarks/.venv-peers: SB3 + SBX (online_speed.py)
    ensure_peer_venv(name="imitation")    # benchmarks/.venv-imitation (bc_speed.py)
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
STAMP = "requirements.json"

# Each entry: install groups, in order. torch goes first in its own group (pip takes a CPU wheel for it),
# then the peers from PyPI, so the peers' own torch requirement is already met by that CPU build.
PEER_REQUIREMENTS = (("torch==2.13.0",), ("stable-baselines3", "sbx-rl", "gymnasium[mujoco]", "mujoco==3.3.0"))
VENVS: dict[str, tuple[tuple[str, ...], ...]] = {
    # SB3 and SBX for online_speed.py; mujoco pinned to ours so both sides simulate with the same build.
    "peers": PEER_REQUIREMENTS,
    # imitation 1.0.1 pins gymnasium ~0.29 and stable-baselines3 ~2.2.1; gymnasium 0.29 predates numpy 2.
    "imitation": (("torch==2.13.0",), ("imitation==1.0.1", "numpy<2")),
    # d3rlpy 2.8.1 pins gymnasium 1.0.0.
    "d3rlpy": (("torch==2.13.0",), ("d3rlpy==2.8.1",)),
}
VENV_DIR = BENCHMARKS_DIR / ".venv-peers"  # the default environment's directory (kept for older callers)


def venv_dir(name: str = "peers") -> Path:
    return BENCHMARKS_DIR / f".venv-{name}"


def peer_python(name: str = "peers") -> Path:
    return venv_dir(name) / "bin" / "python"


def ensure_peer_venv(log=print, name: str = "peers", requirements=None) -> Path:
    """The python of peer environment `name`, creating or refreshing it when needed (minutes, once).

    `requirements` (install groups, each a tuple of pip specifiers) defaults to VENVS[name]."""
    groups = VENVS[name] if requirements is None else tuple(tuple(g) for g in requirements)
    root = venv_dir(name)
    python, stamp = peer_python(name), root / STAMP
    wanted = json.dumps(groups)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"creating the peer environment {name!r} in {root} (once; takes a few minutes)")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    for group in groups:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *group], check=True, stdout=sys.stderr)
    stamp.write_text(wanted)
    return python


def peer_versions(python: Path, packages=("stable-baselines3", "sbx-rl", "torch", "jax", "gymnasium", "mujoco")) -> dict:
    """Installed versions of `packages` in that environment (None for those not installed)."""
    code = ("import json, sys, importlib.metadata as m\n"
            "def v(p):\n"
            "    try:\n"
            "        return m.version(p)\n"
            "    except m.PackageNotFoundError:\n"
            "        return None\n"
            "print(json.dumps({p: v(p) for p in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *packages], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "peers"
    print(peer_versions(ensure_peer_venv(name=which)))
