"""Adversarial inverse reinforcement learning (Fu, Luo & Levine 2018) around SAC or PPO, and its learned reward.

The discriminator is D(s, a, s') = exp(f) / (exp(f) + pi(a|s)), i.e. logit = f(s, a, s') - log pi(a|s), with
    f(s, a, s') = g(s) + gamma * h(s') - h(s)        (g(s, a) with --no-state-only)
where g is the reward term and h a potential-based shaping term; after a true termination there is no
h(s') (terminated transitions bootstrap nothing). The policy is trained on log D - log(1 - D) = f - log pi(a|s)
(--reward-form logit, the paper's), or on -log(1 - D) = softplus(f - log pi) (--reward-form positive, the default
with --rl ppo: on envs that end early (Hopper, Walker2d, Ant) the logit's mostly negative rewards pay the policy
to fall over at once, which is what a Hopper run with it learned (return ~3); the paper's benchmarks and the
imitation library's use fixed-horizon envs, where the sign does not matter); --reward-form f gives f alone and leaves the
entropy term to the RL algorithm (the default with --rl sac, whose soft Bellman backup takes -alpha log pi on
fresh actions of the current policy; -log pi of old replay actions under today's policy can be hundreds of
nats once the policy narrows). With --rl sac the discriminator's policy samples come from the newest
--disc-recent replay transitions, for the same reason. With --rl ppo, log pi is the density of the policy's own
Gaussian draw, before the box clips it: the density at a clipped value would pay a policy whose mean has left the
box a large -log pi for acting bang-bang (a Hopper run learned exactly that and collapsed). gamma is the wrapped RL
algorithm's discount. The loop is understudy.train.adversarial.

The learned reward is exported beside each policy export (best/, final/) as reward.safetensors + reward.json:
    from understudy.algos.airl import load_reward, AIRLRewardWrapper
    reward = load_reward("runs/airl-Hopper-v5-s0/final")        # g (default), or use="f"
    r = reward(obs, action, next_obs, terminated)                # raw env observations and env actions
    env = AIRLRewardWrapper(understudy.envs.make("Hopper-v5"), reward)  # the env's reward replaced by g
g (state-only) is the disentangled reward that transfers to new dynamics; f also holds the shaping.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Literal, Optional

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from understudy.algos import discriminator
from understudy.algos.discriminator import AdversarialConfig, ScalarMLP
from understudy.types import Batch, EnvSpec, UnderstudyError

USES_LOG_PROB = True  # D = exp(f) / (exp(f) + pi(a|s)) needs the policy's density
REWARD_FORMAT = "understudy.reward"
REWARD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Config(AdversarialConfig):
    """AIRL: f(s, a, s') = g(s) + gamma h(s') - h(s) around --rl sac|ppo, expert data from --dataset."""

    reward_form: Optional[Literal["logit", "positive", "f"]] = None
    """Policy reward: logit = log D - log(1 - D) = f - log pi(a|s) (the paper's); positive = -log(1 - D) = softplus(f - log pi) (>= 0, so surviving pays, as in GAIL; right for envs that end early); f = f(s, a, s') alone. None: positive with --rl ppo, f with --rl sac (SAC's own entropy bonus is the -log pi term, taken off-policy-correctly on fresh actions; -log pi of old replay actions under the current policy is not)."""
    disc_recent: Optional[int] = 10_000
    """--rl sac: the discriminator's policy transitions come from the newest N replay transitions, whose actions the current policy's log pi still describes (None: the whole buffer)."""
    state_only: bool = True
    """g depends on the state only, g(s) (the disentangled reward); --no-state-only makes it g(s, a)."""
    shaping_hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the shaping potential h(s)."""


def method_name(cfg: Config) -> str:
    return f"airl-{cfg.rl}"


def check(cfg: Config) -> None:
    discriminator.check_config(cfg, "airl")


# -- networks ------------------------------------------------------------------------------------------------------
def _g_network(cfg: Config) -> ScalarMLP:
    return ScalarMLP(cfg.disc_hidden_dims)


def _h_network(cfg: Config) -> ScalarMLP:
    return ScalarMLP(cfg.shaping_hidden_dims)


def _g_inputs(cfg: Config, obs: jax.Array, actions: jax.Array) -> jax.Array:
    obs = discriminator.clip_observations(cfg, obs)
    return obs if cfg.state_only else jnp.concatenate([obs, jnp.asarray(actions, jnp.float32)], axis=-1)


def init_params(cfg: Config, spec: EnvSpec, key: jax.Array) -> dict:
    """{"g": reward term, "h": shaping potential} for spec's observations and action features."""
    g_key, h_key = jax.random.split(key)
    g_width = spec.obs_dim + (0 if cfg.state_only else spec.action_dim)
    return {"g": _g_network(cfg).init(g_key, jnp.zeros((1, g_width), jnp.float32)),
            "h": _h_network(cfg).init(h_key, jnp.zeros((1, spec.obs_dim), jnp.float32))}


def g_values(cfg: Config, params: dict, obs: jax.Array, actions: jax.Array) -> jax.Array:
    """The reward term g [B] of standardized observations [B, obs_dim] (and action features [B, A])."""
    return _g_network(cfg).apply(params["g"], _g_inputs(cfg, obs, actions))


def h_values(cfg: Config, params: dict, obs: jax.Array) -> jax.Array:
    """The shaping potential h [B] of standardized observations."""
    return _h_network(cfg).apply(params["h"], discriminator.clip_observations(cfg, obs))


def learned_logit(cfg: Config, params: dict, batch: Batch, gamma: float) -> jax.Array:
    """f(s, a, s') [B] = g + gamma (1 - terminated) h(s') - h(s)."""
    return discriminator.shaped_reward(g_values(cfg, params, batch.observations, batch.actions),
                                       h_values(cfg, params, batch.observations),
                                       h_values(cfg, params, batch.next_observations),
                                       jnp.asarray(batch.terminations, jnp.float32), gamma)


def logits(cfg: Config, params: dict, batch: Batch, log_pi: jax.Array, gamma: float) -> jax.Array:
    """The discriminator's logit f - log pi(a|s) [B]; log_pi [B] is the current policy's (a constant here)."""
    f = learned_logit(cfg, params, batch, gamma)
    if jnp.shape(log_pi) != jnp.shape(f):
        raise ValueError(f"log_pi has shape {jnp.shape(log_pi)} but f has {jnp.shape(f)}")
    return f - jax.lax.stop_gradient(log_pi)


def resolved_reward_form(cfg: Config) -> str:
    """--reward-form, with None resolved for the wrapped RL algorithm."""
    if cfg.reward_form is not None:
        return cfg.reward_form
    return "f" if cfg.rl == "sac" else "positive"


def policy_reward(cfg: Config, params: dict, batch: Batch, log_pi: jax.Array, gamma: float) -> jax.Array:
    """The reward [B] the RL algorithm sees: f - log pi (--reward-form logit), softplus(f - log pi) (positive) or f
    (--reward-form f); a constant."""
    form = resolved_reward_form(cfg)
    if form in ("logit", "positive"):
        return jax.lax.stop_gradient(discriminator.gail_reward(logits(cfg, params, batch, log_pi, gamma), form))
    return jax.lax.stop_gradient(learned_logit(cfg, params, batch, gamma))


# -- the exported reward -------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("cfg", "gamma", "use"))
def _exported_values(cfg: Config, gamma: float, use: str, params, mean, std, obs, actions, next_obs, terminated):
    # one program for training-time and loaded rewards, so both give the same numbers
    def standardize(x):
        return x if mean is None else (x - mean) / std

    if use == "g":
        return g_values(cfg, params, standardize(obs), actions)
    batch = Batch(observations=standardize(obs), actions=actions, rewards=None, terminations=terminated,
                  next_observations=standardize(next_obs))
    return learned_logit(cfg, params, batch, gamma)


def export_reward(cfg: Config, params: dict, spec: EnvSpec, normalizer: Optional[dict], directory: str | os.PathLike,
                  metadata: Optional[dict] = None) -> Path:
    """Writes the reward learned in training (params: {"g", "h"} of one seed) beside a policy export."""
    return AIRLReward(cfg, params, spec, normalizer, discriminator.rl_gamma(cfg), metadata=metadata).save(directory)


class AIRLReward:
    """AIRL's learned reward on raw env observations and env actions: g(s[, a]) or f(s, a, s').

    Build one from a run's export with `load_reward(dir)`, or from training values with the constructor.
    `reward(obs, action, next_obs, terminated)` returns `use`'s value (g by default); each argument is one
    transition or a batch [B, ...]. Returns a float for one transition, else a numpy array [B].
    """

    def __init__(self, cfg: Config, params: dict, spec: EnvSpec, normalizer: Optional[dict], gamma: float,
                 use: Literal["g", "f"] = "g", metadata: Optional[dict] = None):
        if use not in ("g", "f"):
            raise UnderstudyError(f"An AIRL reward is used as 'g' (the reward term) or 'f' (with the shaping); got "
                                  f"{use!r}.")
        self.cfg, self.spec, self.gamma, self.use = cfg, spec, float(gamma), use
        self.params = jax.device_put(params)
        self.normalizer = (None if normalizer is None
                           else {k: jnp.asarray(v, jnp.float32) for k, v in normalizer.items()})
        self.metadata = dict(metadata or {})

    # -- values --------------------------------------------------------------------------------------------
    def _call(self, use: str, obs, action, next_obs, terminated):
        obs = np.asarray(obs, np.float32)
        single = obs.shape == tuple(self.spec.obs_shape)
        obs = obs[None] if single else obs
        if obs.shape[1:] != tuple(self.spec.obs_shape):
            raise UnderstudyError(f"Observation shape {obs.shape} does not fit this AIRL reward, learned on "
                                  f"{self.spec.env_id} with observations of shape {tuple(self.spec.obs_shape)}.")
        rows = obs.shape[0]
        actions = self._action_features(action, rows)
        if use == "f":
            next_obs = np.asarray(next_obs, np.float32).reshape(obs.shape)
            terminated = np.asarray(terminated, np.float32).reshape(rows)
        else:
            next_obs, terminated = obs, np.zeros(rows, np.float32)
        mean, std = (None, None) if self.normalizer is None else (self.normalizer["mean"], self.normalizer["std"])
        values = np.asarray(_exported_values(self.cfg, self.gamma, use, self.params, mean, std, jnp.asarray(obs),
                                             actions, jnp.asarray(next_obs), jnp.asarray(terminated)))
        return float(values[0]) if single else values

    def _action_features(self, action, rows: int) -> jax.Array:
        spec = self.spec
        if action is None:
            if not self.cfg.state_only:
                raise UnderstudyError("This AIRL reward's g depends on the action (it was trained with "
                                      "--no-state-only): pass the action.")
            return jnp.zeros((rows, spec.action_dim), jnp.float32)
        if spec.discrete:
            return discriminator.action_features(jnp.asarray(np.asarray(action, np.int32).reshape(rows)), spec)
        from understudy.policy import from_env_action

        action = np.asarray(action, np.float32).reshape(rows, spec.action_dim)
        return jnp.asarray(from_env_action(action, spec), jnp.float32)

    def g(self, obs, action=None):
        """The reward term g(s) (state-only) or g(s, a)."""
        return self._call("g", obs, action, None, None)

    def f(self, obs, action, next_obs, terminated):
        """f(s, a, s') = g + gamma (1 - terminated) h(s') - h(s)."""
        return self._call("f", obs, action, next_obs, terminated)

    def __call__(self, obs, action=None, next_obs=None, terminated=False):
        return self._call(self.use, obs, action, next_obs, terminated)

    def __repr__(self) -> str:
        return f"AIRLReward(env={self.spec.env_id}, use={self.use}, state_only={self.cfg.state_only})"

    # -- files -----------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes reward.safetensors + reward.json into `directory` (beside a policy export; other files stay)."""
        from understudy.checkpoint import _json_default, flatten_params
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {**flatten_params(jax.device_get(self.params["g"]), "g"),
                   **flatten_params(jax.device_get(self.params["h"]), "h")}
        if self.normalizer is not None:
            tensors.update({f"normalizer/{k}": np.asarray(v, np.float32) for k, v in self.normalizer.items()})
        description = {"format": REWARD_FORMAT, "version": REWARD_VERSION, "kind": "airl",
                       "state_only": self.cfg.state_only, "hidden_dims": list(self.cfg.disc_hidden_dims),
                       "shaping_hidden_dims": list(self.cfg.shaping_hidden_dims), "obs_clip": self.cfg.obs_clip,
                       "gamma": self.gamma, "normalizer": self.normalizer is not None, "spec": self.spec.to_dict(),
                       "metadata": self.metadata,
                       "usage": "understudy.algos.airl.load_reward(DIR)(obs, action, next_obs, terminated); "
                                "AIRLRewardWrapper(env, load_reward(DIR)) replaces an env's reward"}
        # each file appears whole (written aside, then renamed); the JSON last, as it announces the export
        for name, write in (("reward.safetensors", lambda p: save_file(
                {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(p))),
                            ("reward.json", lambda p: p.write_text(json.dumps(description, indent=2,
                                                                               default=_json_default)))):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            os.close(fd)
            try:
                write(Path(tmp))
                os.chmod(tmp, 0o644)
                os.replace(tmp, directory / name)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        return directory


def is_reward_export(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding an AIRL reward export (reward.json)."""
    return (Path(path) / "reward.json").is_file()


def load_reward(path: str | os.PathLike, use: Literal["g", "f"] = "g") -> AIRLReward:
    """Loads the reward.safetensors + reward.json written beside an AIRL run's policy exports (best/, final/).

    Damaged or mismatched files raise UnderstudyError naming the file and the fix. Nothing is unpickled.
    """
    from understudy.checkpoint import read_export_files, unflatten_params

    directory = Path(path)
    if not is_reward_export(directory):
        raise UnderstudyError(f"{directory} holds no AIRL reward (no reward.json). Pass an AIRL run's best/ or final/ "
                              "directory (e.g. runs/airl-Hopper-v5-s0/final).")
    redo = "re-export it by training AIRL again (or copy the run's best/ or final/ directory whole)"
    description, tensors = read_export_files(directory, "reward", REWARD_FORMAT,
                                             required=("kind", "spec", "state_only", "hidden_dims",
                                                       "shaping_hidden_dims", "obs_clip", "gamma", "normalizer"),
                                             redo=redo)
    json_path, weights_path = directory / "reward.json", directory / "reward.safetensors"
    if description["kind"] != "airl":
        raise UnderstudyError(f"{json_path}: kind {description['kind']!r} is not a reward this version can use "
                              "(only 'airl').")
    try:
        spec = EnvSpec.from_dict(description["spec"])
        cfg = Config(state_only=bool(description["state_only"]),
                     disc_hidden_dims=tuple(int(w) for w in description["hidden_dims"]),
                     shaping_hidden_dims=tuple(int(w) for w in description["shaping_hidden_dims"]),
                     obs_clip=float(description["obs_clip"]))
        gamma = float(description["gamma"])
        spec.obs_dim  # noqa: B018 (dict observations are not supported: raises here)
    except (KeyError, TypeError, ValueError) as e:
        raise UnderstudyError(f"{json_path} is malformed ({e}); {redo}.") from None
    params = {"g": unflatten_params(tensors, "g"), "h": unflatten_params(tensors, "h")}
    expected = jax.eval_shape(lambda: init_params(cfg, spec, jax.random.PRNGKey(0)))
    want = jax.tree.map(lambda x: tuple(x.shape), expected)
    try:
        have = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    except Exception:  # noqa: BLE001 (any odd structure is a mismatch)
        have = None
    if want != have:
        raise UnderstudyError(f"{weights_path}: the stored weights do not match the networks described in {json_path} "
                              f"(names or shapes differ; {spec.obs_dim}-dim observations, g hidden "
                              f"{cfg.disc_hidden_dims}, h hidden {cfg.shaping_hidden_dims}). The files do not belong "
                              f"together or were edited: {redo}.")
    normalizer = None
    if description["normalizer"]:
        if "normalizer/mean" not in tensors or "normalizer/std" not in tensors:
            raise UnderstudyError(f"{weights_path} lacks the observation normalizer that {json_path} declares: {redo}.")
        normalizer = {"mean": tensors["normalizer/mean"], "std": tensors["normalizer/std"]}
        if normalizer["mean"].shape != tuple(spec.obs_shape) or normalizer["std"].shape != tuple(spec.obs_shape):
            raise UnderstudyError(f"{weights_path}: the observation normalizer has shape {normalizer['mean'].shape}, "
                                  f"not the observations' {tuple(spec.obs_shape)}: {redo}.")
    return AIRLReward(cfg, params, spec, normalizer, gamma, use=use, metadata=description.get("metadata"))


class AIRLRewardWrapper(gym.Wrapper):
    """Replaces an environment's reward by an AIRL reward (g by default): train any RL algorithm on it.

    The environment's own reward stays visible in info["env_reward"] (for logging only).
    """

    def __init__(self, env: gym.Env, reward: AIRLReward | str | os.PathLike):
        super().__init__(env)
        self.reward_fn = reward if isinstance(reward, AIRLReward) else load_reward(reward)
        spec = self.reward_fn.spec
        obs_shape = tuple(env.observation_space.shape or ())
        discrete = isinstance(env.action_space, gym.spaces.Discrete)
        action_ok = (discrete and spec.discrete and env.action_space.n == spec.num_actions) or (
            not discrete and not spec.discrete and int(np.prod(env.action_space.shape)) == spec.action_dim)
        if obs_shape != tuple(spec.obs_shape) or not action_ok:
            actions = f"{spec.action_dim} discrete actions" if spec.discrete else f"{spec.action_dim} action dims"
            raise UnderstudyError(f"The AIRL reward was learned on {spec.env_id} (observations "
                                  f"{tuple(spec.obs_shape)}, {actions}), which does not fit this environment "
                                  f"(observations {env.observation_space}, actions {env.action_space}). Use a reward "
                                  "learned on this environment.")
        self._obs = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        reward = self.reward_fn(self._obs, action, obs, terminated)
        self._obs = obs
        return obs, float(reward), terminated, truncated, dict(info, env_reward=env_reward)
