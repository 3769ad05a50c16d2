"""benchmarks/online_speed.py, our side only: the FLOP count of the floor and a short timed run of our loop.

No peer environment (SB3, SBX) is touched here (building one takes minutes and the network).
"""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import online_speed  # noqa: E402


def test_floor_counts_the_update_matmuls():
    """TD3 on HalfCheetah shapes (obs 17, action 6), counted by hand from the layer shapes, 256-256, batch 256."""
    B, H, obs, act = 256, 256, 17, 6
    critic_fwd = B * ((obs + act) * H + H * H + H * 1)  # multiply-adds of one critic's forward pass
    critic_bwd_w = critic_fwd  # weight gradients: the same products transposed
    critic_bwd_x = B * (H * H + H * 1)  # input gradients, all layers but the first
    actor_fwd = B * (obs * H + H * H + H * act)
    actor_bwd = actor_fwd + B * (H * H + H * act)
    q1_to_action = critic_fwd + critic_bwd_x + B * (obs + act) * H  # forward and back to the action input
    macs = (actor_fwd + 2 * critic_fwd + 2 * (critic_fwd + critic_bwd_w + critic_bwd_x)
            + 0.5 * (actor_fwd + actor_bwd + q1_to_action))
    counted = sum(t * m * k * n for t, (m, k, n) in online_speed.update_matmuls("td3", obs, act))
    assert counted == pytest.approx(macs)
    # at 1 FLOP/s everywhere, the floor's seconds are the FLOPs
    rates = {shape: 1.0 for _, shape in online_speed.update_matmuls("td3", obs, act)}
    assert online_speed.floor("td3", obs, act, rates)["mflop_per_update"] == pytest.approx(2 * macs / 1e6, abs=0.05)


def test_ours_times_our_training_loop():
    """The clock wraps the env our off-policy loop builds; a broken hook would leave the timestamps unset."""
    rate = online_speed.ours("td3", "Pendulum-v1", warmup=100, skip=50, steps=100)
    assert 0 < rate < 1e6
