"""Creates or reuses the peers' virtual environment (benchmarks/.venv-peers) for side-by-side benchmarks.

Peers pin other gymnasium/jax versions than ours, so they live in their own environment; the benchmark
runs their measurement in a subprocess there. The environment is rebuilt when PEER_REQUIREMENTS change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

VENV_DIR = Path(__file__).resolve().parent / ".venv-peers"
# torch first (on this machine pip takes a local CPU wheel for it), then the peers from PyPI.
# mujoco is pinned to ours so both sides simulate HalfCheetah with the same physics build.
PEER_REQUIREMENTS = (("torch==2.13.0",), ("stable-baselines3", "sbx-rl", "gymnasium[mujoco]", "mujoco==3.3.0"))
STAMP = "requirements.json"


def peer_python() -> Path:
    return VENV_DIR / "bin" / "python"


def ensure_peer_venv(log=print) -> Path:
    """The peers' python, creating or refreshing the environment when needed (minutes, once)."""
    python, stamp = peer_python(), VENV_DIR / STAMP
    wanted = json.dumps(PEER_REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"creating the peers' environment in {VENV_DIR} (once; takes a few minutes)")
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV_DIR)
    for group in PEER_REQUIREMENTS:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *group], check=True, stdout=sys.stderr)
    stamp.write_text(wanted)
    return python


def peer_versions(python: Path) -> dict:
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('stable-baselines3', 'sbx-rl', 'torch', 'jax', 'gymnasium', 'mujoco')}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    print(peer_versions(ensure_peer_venv()))
