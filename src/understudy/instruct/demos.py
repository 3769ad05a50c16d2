"""Demonstrations for instruction-following agents: the BabyAI bot and Meta-World's scripted policies.

Both ride on `understudy.data.collect.collect` (whole episodes from vector envs) and give datasets whose
episodes carry an instruction text and a task id:

- BabyAI: the bot shipped with minigrid solves each level from the simulator's state; the instruction is
  the episode's mission, task id 0.
- Meta-World: one collection per task of a suite (MT10: ids 0..9 in suite order), episodes ending at
  success; each episode's instruction is a training paraphrase of its task drawn uniformly with a seeded
  RNG (held-out paraphrases never appear). With images, observations are {"state": float32[39],
  "image": uint8[64, 64, 3]}.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence, Union

import numpy as np

from understudy.data.collect import collect
from understudy.data.episodes import Dataset, mix_datasets
from understudy.instruct.paraphrases import paraphrases, suite_label, suite_tasks, task_name
from understudy.types import UnderstudyError

IMAGE_SIZE = 64
# Meta-World's scripted policy class per task (explicit: peg-insert-side-v3's is SawyerPegInsertionSide...).
SCRIPTED_POLICIES = {
    "assembly-v3": "SawyerAssemblyV3Policy",
    "basketball-v3": "SawyerBasketballV3Policy",
    "bin-picking-v3": "SawyerBinPickingV3Policy",
    "box-close-v3": "SawyerBoxCloseV3Policy",
    "button-press-topdown-v3": "SawyerButtonPressTopdownV3Policy",
    "button-press-topdown-wall-v3": "SawyerButtonPressTopdownWallV3Policy",
    "button-press-v3": "SawyerButtonPressV3Policy",
    "button-press-wall-v3": "SawyerButtonPressWallV3Policy",
    "coffee-button-v3": "SawyerCoffeeButtonV3Policy",
    "coffee-pull-v3": "SawyerCoffeePullV3Policy",
    "coffee-push-v3": "SawyerCoffeePushV3Policy",
    "dial-turn-v3": "SawyerDialTurnV3Policy",
    "disassemble-v3": "SawyerDisassembleV3Policy",
    "door-close-v3": "SawyerDoorCloseV3Policy",
    "door-lock-v3": "SawyerDoorLockV3Policy",
    "door-open-v3": "SawyerDoorOpenV3Policy",
    "door-unlock-v3": "SawyerDoorUnlockV3Policy",
    "drawer-close-v3": "SawyerDrawerCloseV3Policy",
    "drawer-open-v3": "SawyerDrawerOpenV3Policy",
    "faucet-close-v3": "SawyerFaucetCloseV3Policy",
    "faucet-open-v3": "SawyerFaucetOpenV3Policy",
    "hammer-v3": "SawyerHammerV3Policy",
    "hand-insert-v3": "SawyerHandInsertV3Policy",
    "handle-press-side-v3": "SawyerHandlePressSideV3Policy",
    "handle-press-v3": "SawyerHandlePressV3Policy",
    "handle-pull-side-v3": "SawyerHandlePullSideV3Policy",
    "handle-pull-v3": "SawyerHandlePullV3Policy",
    "lever-pull-v3": "SawyerLeverPullV3Policy",
    "peg-insert-side-v3": "SawyerPegInsertionSideV3Policy",
    "peg-unplug-side-v3": "SawyerPegUnplugSideV3Policy",
    "pick-out-of-hole-v3": "SawyerPickOutOfHoleV3Policy",
    "pick-place-v3": "SawyerPickPlaceV3Policy",
    "pick-place-wall-v3": "SawyerPickPlaceWallV3Policy",
    "plate-slide-back-side-v3": "SawyerPlateSlideBackSideV3Policy",
    "plate-slide-back-v3": "SawyerPlateSlideBackV3Policy",
    "plate-slide-side-v3": "SawyerPlateSlideSideV3Policy",
    "plate-slide-v3": "SawyerPlateSlideV3Policy",
    "push-back-v3": "SawyerPushBackV3Policy",
    "push-v3": "SawyerPushV3Policy",
    "push-wall-v3": "SawyerPushWallV3Policy",
    "reach-v3": "SawyerReachV3Policy",
    "reach-wall-v3": "SawyerReachWallV3Policy",
    "shelf-place-v3": "SawyerShelfPlaceV3Policy",
    "soccer-v3": "SawyerSoccerV3Policy",
    "stick-pull-v3": "SawyerStickPullV3Policy",
    "stick-push-v3": "SawyerStickPushV3Policy",
    "sweep-into-v3": "SawyerSweepIntoV3Policy",
    "sweep-v3": "SawyerSweepV3Policy",
    "window-close-v3": "SawyerWindowCloseV3Policy",
    "window-open-v3": "SawyerWindowOpenV3Policy",
}


# ---------------------------------------------------------------------------------------------------------
# demonstrators
# ---------------------------------------------------------------------------------------------------------
class BabyAIBotPolicy:
    """minigrid's BabyAI bot for every sub-env of a vector env; pass it to `collect` (it binds to the envs).

    A fresh bot starts whenever a sub-env begins an episode (its step_count is 0). Under next_step
    autoreset the action sent on the step after an episode ended only resets that sub-env and is ignored,
    so the bot is not asked then (that state may be a finished mission).
    """

    __name__ = "bot"

    def bind(self, envs) -> Callable[[dict], np.ndarray]:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        if not hasattr(envs, "envs"):
            raise UnderstudyError("BabyAIBotPolicy needs a gymnasium SyncVectorEnv (it reads each sub-env's "
                                  "simulator); collect with understudy.data.collect, which makes one.")
        levels = [e.unwrapped for e in envs.envs]
        bots: list = [None] * len(levels)

        def act(obs) -> np.ndarray:
            # SyncVectorEnv marks the sub-envs whose next step() only resets them (gymnasium 1.x).
            resetting = getattr(envs, "_autoreset_envs", np.zeros(len(levels), bool))
            actions = np.zeros(len(levels), np.int64)
            for i, level in enumerate(levels):
                if resetting[i]:
                    continue
                if bots[i] is None or level.step_count == 0:
                    bots[i] = BabyAIBot(level)
                try:
                    actions[i] = int(bots[i].replan())
                except Exception as e:  # noqa: BLE001  (the bot asserts on layouts it cannot solve)
                    env_id = getattr(envs.envs[i], "env_id", "this level")
                    raise UnderstudyError(
                        f"The BabyAI bot failed on {env_id} (sub-env {i}, step {level.step_count}, mission "
                        f"{level.mission!r}): {type(e).__name__}: {e}. The bot may not support this level; "
                        "try another seed or level.") from e
            return actions

        return act


class MetaWorldScriptedPolicy:
    """Meta-World's scripted policy for one task: batch of observations [B, 39] -> actions [B, 4] in [-1, 1].

    Also takes {"state": ..., "image": ...} observations (it reads the state only).
    """

    def __init__(self, task: str):
        import metaworld.policies

        self.task = task_name(task)
        self.__name__ = f"scripted:{self.task}"
        self._policy = getattr(metaworld.policies, SCRIPTED_POLICIES[self.task])()

    def __call__(self, obs) -> np.ndarray:
        states = np.asarray(obs["state"] if isinstance(obs, dict) else obs, np.float64)
        if states.ndim != 2:
            raise UnderstudyError(f"MetaWorldScriptedPolicy takes a batch of states [B, 39], got shape "
                                  f"{states.shape}; add a leading batch axis.")
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip to [-1, 1] below
            warnings.simplefilter("ignore", UserWarning)
            actions = np.stack([self._policy.get_action(s) for s in states])
        return np.clip(actions, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# collection
# ---------------------------------------------------------------------------------------------------------
def babyai_env_id(level: str) -> str:
    """The registered id for a BabyAI level: "GoToLocal", "babyai:GoToLocal" or "BabyAI-GoToLocal-v0"."""
    from understudy.envs import resolve

    try:
        family, env_id = resolve(level)
    except UnderstudyError:
        if ":" in level:
            raise
        family, env_id = resolve("babyai:" + level)  # a bare level name
    if family != "babyai":
        raise UnderstudyError(f"The BabyAI bot plays BabyAI levels only, but '{level}' is a {family} environment. "
                              "Use a level such as babyai:GoToLocal, or another --policy for this env.")
    return env_id


def collect_babyai(level: str, episodes: int, seed: int = 0, num_envs: int = 8, progress: bool = True) -> Dataset:
    """`episodes` bot episodes on a BabyAI level; instruction = the episode's mission, task id 0."""
    env_id = babyai_env_id(level)
    ds = collect(env_id, BabyAIBotPolicy(), episodes=episodes, seed=seed, num_envs=num_envs, policy_name="bot",
                 progress=progress)
    ds.task_id = np.zeros(ds.num_steps, np.int64)
    ds.metadata.update(policy="bot", tasks=[env_id])
    return ds


def _task_seed(seed: int, task_index: int) -> int:
    """A reset seed per (seed, task): sub-env i of task j is seeded with _task_seed(seed, j) + i."""
    return int(np.random.SeedSequence([int(seed), int(task_index), 0x7461736B]).generate_state(1)[0] >> 2)


def collect_metaworld(suite: Union[str, Sequence[str]] = "MT10", episodes_per_task: int = 10, seed: int = 0,
                      images: bool = False, num_envs: int = 8, action_noise: float = 0.0,
                      clean_action_labels: bool = False, progress: bool = True) -> Dataset:
    """Scripted demonstrations on every task of a Meta-World suite, `episodes_per_task` each.

    suite: "MT10", "MT1:<task>", a task name, or a list of task names; task id = index in the suite.
    images: also record 64x64 RGB renders; observations become {"state", "image"} (about 5x slower with
        software rendering).
    Episodes end at success (terminate_on_success=True) or after 500 steps. Each episode's instruction is
    a training paraphrase of its task, drawn uniformly with an RNG seeded by (seed, task index).
    action_noise, clean_action_labels: as in `understudy.data.collect.collect`.
    """
    tasks = suite_tasks(suite)
    label = suite_label(suite)
    options: dict = {"terminate_on_success": True}
    if images:
        options["image_size"] = IMAGE_SIZE
    parts, seeds = [], []
    for j, task in enumerate(tasks):
        seeds.append(_task_seed(seed, j))
        ds = collect(f"metaworld/{task}", MetaWorldScriptedPolicy(task), episodes=episodes_per_task, seed=seeds[-1],
                     num_envs=num_envs, env_options=options, policy_name="scripted", action_noise=action_noise,
                     clean_action_labels=clean_action_labels, progress=progress)
        train = paraphrases(task)["train"]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), j, 0x70617261]))
        ds.instructions = [train[k] for k in rng.integers(len(train), size=ds.num_episodes)]
        parts.append(ds)
    out = mix_datasets(parts)  # task id = index of the part = index in the suite
    env_ids = [f"metaworld/{t}" for t in tasks]
    spec = dict(parts[0].metadata["spec"])
    if len(tasks) > 1:  # the suite's data, not its first task's: no single id or instruction
        spec.update(env_id=f"metaworld:{label}" if label != "custom" else "", instruction=None)
        env_id = f"metaworld:{label}" if label != "custom" else None
    else:
        env_id = env_ids[0]
    out.metadata.update(
        env_id=env_id, spec=spec, policy="scripted", suite=label, tasks=env_ids, env_options=options,
        instructions={t: paraphrases(t) for t in tasks}, seed=int(seed), task_seeds=seeds,
        episodes_per_task=int(episodes_per_task), num_envs=int(parts[0].metadata["num_envs"]))
    for key in ("action_noise", "action_labels"):  # recorded by collect on every part
        if key in parts[0].metadata:
            out.metadata[key] = parts[0].metadata[key]
    return out


def collect_demonstrations(env: str, policy: str, episodes: int, *, seed: int = 0, images: bool = False,
                           action_noise: float = 0.0, clean_action_labels: bool = False,
                           progress: bool = True) -> Dataset:
    """`understudy collect --policy bot|scripted`: checks the env fits the demonstrator, then collects."""
    from understudy.envs import metaworld as mw

    is_metaworld = mw.suite_name(env) is not None or env.startswith((mw.ALIAS_PREFIX, mw.PREFIX)) or \
        env in mw.INSTRUCTIONS or env.upper().startswith("MT1:")
    if images and not (policy == "scripted" and is_metaworld):
        raise UnderstudyError("--images records 64x64 renders of Meta-World tasks and works only with --policy "
                              "scripted on a Meta-World env (e.g. --env metaworld:MT10); drop --images.")
    if policy == "bot":
        if is_metaworld:
            raise UnderstudyError(f"--policy bot is the BabyAI bot, but {env} is Meta-World: use --policy scripted "
                                  "for Meta-World's scripted policies.")
        if action_noise or clean_action_labels:
            raise UnderstudyError("--action-noise (and --clean-action-labels) need continuous actions; the BabyAI "
                                  "bot's are discrete. Drop them.")
        return collect_babyai(env, episodes, seed=seed, progress=progress)
    if policy == "scripted":
        if not is_metaworld:
            hint = " (for BabyAI levels use --policy bot)" if env.lower().startswith(("babyai", "minigrid")) else ""
            raise UnderstudyError(f"--policy scripted runs Meta-World's scripted policies, but {env} is not a "
                                  f"Meta-World task or suite{hint}. Use e.g. --env metaworld:MT10 or "
                                  "--env metaworld:reach-v3.")
        return collect_metaworld(env, episodes, seed=seed, images=images, action_noise=action_noise,
                                 clean_action_labels=clean_action_labels, progress=progress)
    raise UnderstudyError(f"Unknown demonstrator {policy!r}: use bot (BabyAI) or scripted (Meta-World).")
