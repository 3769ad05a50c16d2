"""Family "metaworld": single Meta-World v3 tasks, MT1-style (metaworld 3.1.1's "Meta-World/MT1" registration).

Ids: "metaworld/reach-v3" (canonical), "metaworld:reach-v3" or "reach-v3". Observations are the 39-d
state vector (goal visible), as float32; with option image_size=S they are {"state": float32[39], "image":
uint8[S, S, 3]} (rendered from the camera_name camera, default "corner"). Each reset draws one of 50 goal positions, which are fixed by the make() seed
(MT1's task set); `reset(seed=s)` re-seeds the goal draw, so a seeded reset is reproducible (Meta-World
itself ignores the reset seed). info["success"] is a bool; info["instruction"] is the task's fixed text,
also in EnvSpec.instruction. Episodes last 500 steps (Meta-World's max_path_length) and, by default, do
not end on success (option terminate_on_success=True makes them).

Suites (SUITES, e.g. "metaworld:MT10") name several tasks: they are not one env, so make() refuses them
with a message pointing at `understudy collect` (understudy.instruct.demos collects a suite task by task).

Meta-World builds its tasks with pickle.dumps/loads of its own in-memory data; no file is unpickled.
"""

from __future__ import annotations

import os
from typing import Optional

# Headless offscreen rendering; must be set before mujoco is first imported. A user's own choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from understudy.envs.base import Built  # noqa: E402
from understudy.envs.errors import user_error  # noqa: E402
from understudy.envs.wrappers import Float32Observation  # noqa: E402

FAMILY = "metaworld"
PREFIX = "metaworld/"
ALIAS_PREFIX = "metaworld:"  # "metaworld:reach-v3", like "babyai:GoToLocal"
# The 39-entry state is [hand xyz, gripper opening, 2 objects' xyz + quaternion] now, the same one step
# before, then the goal xyz. These entries are the robot's own (hand, gripper, now and before) and the goal:
# what an image-based policy reads beside the image, which then must show where the objects are.
PROPRIO_AND_GOAL = (0, 1, 2, 3, 18, 19, 20, 21, 36, 37, 38)
MAX_PATH_LENGTH = 500  # SawyerXYZEnv.max_path_length; stepping past it raises inside Meta-World

# One instruction per task (after the task descriptions in the Meta-World paper). Also the list of the
# 50 v3 tasks, kept here so listing and id suggestions need not import metaworld.
INSTRUCTIONS = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "dunk the basketball into the basket",
    "bin-picking-v3": "move the puck from one bin to the other bin",
    "box-close-v3": "grasp the lid and close the box with it",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "reach past the wall and press the button from the top",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "reach past the wall and press the button",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial",
    "disassemble-v3": "pick the nut off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "hand-insert-v3": "insert the gripper into the hole",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet handle to open it",
    "faucet-close-v3": "turn the faucet handle to close it",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate out of the cabinet from the side",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal",
    "reach-wall-v3": "reach over the wall to the goal",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

# Multi-task suites; a task's index in its suite is its task id.
SUITES = {
    "MT10": ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
             "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"),
}

OPTIONS = {
    "max_episode_steps": f"time limit in steps, at most {MAX_PATH_LENGTH} (default {MAX_PATH_LENGTH})",
    "terminate_on_success": "end the episode on the first success (default False)",
    "reward_function_version": "'v2' (default) or 'v1'",
    "task_select": "'random' goal each reset (default) or 'pseudorandom' (cycles through the 50 goals "
                   "when tasks are re-sampled)",
    "width": "render width in pixels (default 480)",
    "height": "render height in pixels (default 480)",
    "camera_name": "render camera, e.g. 'corner' (default), 'corner2', 'topview', 'gripperPOV'",
    "camera_id": "render camera by index (instead of camera_name)",
    "image_size": "also observe an RGB image of this many pixels per side (8..480), e.g. 64: observations "
                  "become {'state': float32[39], 'image': uint8[S, S, 3]} (default: the state vector only)",
}


def suite_name(env_id: str) -> Optional[str]:
    """"MT10" for "metaworld:MT10", "metaworld/mt10" or "MT10"; None when `env_id` names no suite."""
    for prefix in (ALIAS_PREFIX, PREFIX):
        if env_id.startswith(prefix):
            env_id = env_id[len(prefix):]
            break
    return env_id.upper() if env_id.upper() in SUITES else None


def resolve(env_id: str) -> Optional[str]:
    suite = suite_name(env_id)
    if suite is not None:
        tasks = ", ".join(SUITES[suite])
        raise user_error(
            f"'{env_id}' is the Meta-World suite {suite} ({len(SUITES[suite])} tasks: {tasks}), not a single "
            f"environment. Collect demonstrations on the whole suite with `understudy collect --env "
            f"metaworld:{suite} --policy scripted --episodes N` (N per task), or make one of its tasks, e.g. "
            f"'metaworld:{SUITES[suite][0]}'.")
    if env_id.startswith(ALIAS_PREFIX):
        task = env_id[len(ALIAS_PREFIX):]
        if task.startswith(PREFIX):
            task = task[len(PREFIX):]
        if task not in INSTRUCTIONS:
            import difflib

            close = difflib.get_close_matches(task, list(INSTRUCTIONS) + list(SUITES), n=3)
            hint = f" Did you mean {' or '.join(ALIAS_PREFIX + c for c in close)}?" if close else ""
            raise user_error(f"Unknown Meta-World task '{task}' in '{env_id}'.{hint} Tasks are the 50 v3 names "
                             f"(e.g. metaworld:reach-v3; understudy.envs.list_envs()['metaworld'] lists them) and "
                             f"suites are {', '.join(ALIAS_PREFIX + k for k in SUITES)}.")
        return PREFIX + task
    task = env_id[len(PREFIX):] if env_id.startswith(PREFIX) else env_id
    return PREFIX + task if task in INSTRUCTIONS else None


def known_ids() -> list[str]:
    return sorted(PREFIX + task for task in INSTRUCTIONS)


def option_names(env_id: str) -> dict[str, str]:
    return dict(OPTIONS)


class MetaWorldAdapter(gym.Wrapper):
    """Makes reset(seed=s) re-seed Meta-World's goal draw, adds the instruction, makes success a bool, and
    turns rendered frames upright (Meta-World's cameras come out upside down from MuJoCo's renderer,
    Farama-Foundation/Metaworld issues 505 and 516)."""

    def __init__(self, env: gym.Env, instruction: str):
        super().__init__(env)
        self.instruction = instruction

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self.env.unwrapped.seed(seed)  # the RNG RandomTaskSelectWrapper draws goals from
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, dict(info, instruction=self.instruction, success=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, instruction=self.instruction, success=bool(info.get("success", 0.0)))
        return obs, float(reward), terminated, truncated, info

    def render(self):
        frame = self.env.render()
        if self.render_mode in ("rgb_array", "depth_array") and frame is not None:
            frame = np.ascontiguousarray(frame[::-1])
        return frame


class RenderedImageObservation(gym.Wrapper):
    """Observations become {"state": the wrapped env's vector, "image": uint8 [size, size, 3]}, the image
    rendered from `camera` after every reset and step by a renderer of its own (so the env's render_mode,
    e.g. for video, is untouched). Shadows, reflections and multisampling are off: at 64x64 the frames look
    the same bar slightly jagged edges, and with software (Mesa) rendering a frame took 12 ms instead of
    190 ms (measured here). Training and evaluation both render through this wrapper, so they match."""

    def __init__(self, env: gym.Env, size: int, camera):
        super().__init__(env)
        self.size, self.camera = int(size), camera
        self.observation_space = gym.spaces.Dict({
            "state": env.observation_space,
            "image": gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)})
        self._renderer = None

    def _image(self) -> np.ndarray:
        sim = self.env.unwrapped
        if self._renderer is None:
            try:  # the first frame creates the GL context: the place a missing EGL shows up
                import mujoco

                quality = sim.model.vis.quality
                samples, quality.offsamples = quality.offsamples, 0  # read once, when the GL context is made
                try:
                    self._renderer = mujoco.Renderer(sim.model, self.size, self.size)
                finally:
                    quality.offsamples = samples  # the env's own render() keeps its antialiasing
                for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                    self._renderer.scene.flags[flag] = False
                self._renderer.update_scene(sim.data, camera=self.camera)
                return np.ascontiguousarray(self._renderer.render()[::-1])
            except Exception as e:  # noqa: BLE001  (GL errors come in many types)
                raise user_error(
                    f"Rendering image observations failed ({type(e).__name__}: {e}). Headless MuJoCo rendering "
                    "uses EGL (MUJOCO_GL=egl): install libegl1, libopengl0, libegl-mesa0 and libgl1-mesa-dri, or "
                    "set MUJOCO_GL=osmesa with libosmesa6; or drop image_size (--images).") from e
        self._renderer.update_scene(sim.data, camera=self.camera)
        return np.ascontiguousarray(self._renderer.render()[::-1])  # MuJoCo's rows run bottom-up

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return {"state": obs, "image": self._image()}, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return {"state": obs, "image": self._image()}, reward, terminated, truncated, info

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


def build(env_id: str, *, seed: Optional[int], render_mode: Optional[str], options: dict) -> Built:
    import metaworld  # noqa: F401  (registers the Meta-World/* ids; slow, hence lazy)

    task = env_id[len(PREFIX):]
    opts = dict(options)
    max_steps = int(opts.pop("max_episode_steps", MAX_PATH_LENGTH))
    if not 1 <= max_steps <= MAX_PATH_LENGTH:
        raise user_error(f"max_episode_steps={max_steps} for '{env_id}': Meta-World episodes can last at most "
                         f"{MAX_PATH_LENGTH} steps; pass a value from 1 to {MAX_PATH_LENGTH}.")
    image_size = opts.pop("image_size", None)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer))
                                   or not 8 <= image_size <= 480):
        raise user_error(f"image_size={image_size!r} for '{env_id}' must be a whole number of pixels from 8 to "
                         "480 (e.g. 64), or None for state observations only.")
    camera = opts.get("camera_id", opts.get("camera_name", "corner"))
    if render_mode is not None and "camera_id" not in opts:
        opts.setdefault("camera_name", "corner")
    # The checker would warn on every step: Meta-World declares goal bounds of 0 (fixed below).
    env = gym.make("Meta-World/MT1", env_name=task, seed=seed, render_mode=render_mode,
                   max_episode_steps=max_steps, disable_env_checker=True, **opts)
    env.reset()  # sets the first goal, which makes the goal observable and its bounds real
    env = Float32Observation(env, space=env.unwrapped.sawyer_observation_space)
    env = MetaWorldAdapter(env, INSTRUCTIONS[task])
    if image_size is not None:
        env = RenderedImageObservation(env, int(image_size), camera)
    return Built(env=env, max_episode_steps=max_steps, instruction=INSTRUCTIONS[task])
