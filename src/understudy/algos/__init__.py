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
    "td3": ("understudy.algos.td3", "off_policy",
            "Twin delayed DDPG: deterministic tanh actor, twin critics, delayed actor updates, target smoothing "
            "(online)"),
    "dqn": ("understudy.algos.dqn", "off_policy",
            "Double DQN with a target network and epsilon-greedy exploration (online, discrete actions)"),
    "reinforce": ("understudy.algos.reinforce", "episodic",
                  "REINFORCE on whole episodes; --baseline adds a learned value baseline (note 001 options: "
                  "--length-bonus, --anneal-gradient-weight, --replay-trajectories)"),
    "actor-critic": ("understudy.algos.actor_critic", "episodic",
                     "Actor-critic with TD(lambda) advantages (--gae-lambda 0 is one-step TD); note 001's options"),
    "seeded-sac": ("understudy.algos.seeded_sac", "seeded",
                   "Imitation-seeded SAC (note 001): fit an imitator to the expert (--expert POLICY_DIR|DATASET), "
                   "calibrate actor/critics to it, then re-seed with decaying probability or explore with SAC"),
    "ppo": ("understudy.algos.ppo", "on_policy",
            "Proximal policy optimization: GAE, clipped objective, observation/reward normalization saved with the "
            "policy (online; continuous and discrete)"),
    "bc": ("understudy.algos.bc", "offline",
           "Behaviour cloning from a dataset with an action head (--head mse|gaussian|...)"),
    "td3bc": ("understudy.algos.td3bc", "offline",
              "TD3+BC: TD3 with a behaviour-cloning term, lambda = alpha / mean|Q| (offline; CORL defaults)"),
    "iql": ("understudy.algos.iql", "offline",
            "Implicit Q-learning: expectile value net, twin critics, advantage-weighted Gaussian actor (offline; CORL "
            "defaults)"),
    "cql": ("understudy.algos.cql", "offline",
            "Conservative Q-learning: SAC with the CQL(H) penalty, optional Lagrangian (offline; CORL defaults, "
            "--preset small for CPU)"),
    "dt": ("understudy.algos.dt", "sequence",
           "Decision Transformer: causal transformer over (return-to-go, state, action) windows of K steps, conditioned "
           "on --target-return at evaluation (offline; DT paper/CORL defaults, --preset corl)"),
    "morel": ("understudy.algos.morel", "model_based",
              "MOReL: dynamics ensemble (--model mlp|vae), unknown-state detector from ensemble disagreement with a "
              "HALT penalty, policy optimised inside the pessimistic model with --rl sac|ppo (offline; --preset paper)"),
    "dagger": ("understudy.algos.dagger", "interactive",
               "DAgger: roll out the learner mixed with an expert (--expert POLICY_DIR, beta_i = 1/(1+i)), relabel "
               "visited states with the expert's actions, aggregate, retrain (optional --dataset demos as D_0)"),
    "gail": ("understudy.algos.gail", "adversarial",
             "GAIL: discriminator D(s, a) on expert demonstrations (--dataset) vs the policy; reward -log(1 - D) trains "
             "--rl sac|ppo (--grad-penalty, --disc-*)"),
    "airl": ("understudy.algos.airl", "adversarial",
             "AIRL: f(s,a,s') = g(s) + gamma h(s') - h(s) against log pi; trains --rl sac|ppo and exports the learned "
             "reward (reward.safetensors + reward.json) beside the policy; `train sac --reward-model DIR` trains on it"),
    "instruct": ("understudy.instruct.algo", "instruct",
                 "Instruction-following transformer policy (note 004) cloned from multi-task demonstrations with "
                 "instructions (--dataset A[,B,...]); data-parallel over every device; per-task evaluation"),
}


def get_algorithm(name: str) -> ModuleType:
    """The algorithm module registered as `name`."""
    if name not in ALGORITHMS:
        raise UnderstudyError(f"Unknown algorithm {name!r}. Available: {', '.join(sorted(ALGORITHMS))}.")
    return importlib.import_module(ALGORITHMS[name][0])


__all__ = ["ALGORITHMS", "get_algorithm"]
