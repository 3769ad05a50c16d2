"""mp4 video of episodes, headless: rgb_array frames encoded by imageio-ffmpeg (H.264, yuv420p).

MuJoCo families render through EGL (MUJOCO_GL=egl, set by their modules); on Debian that needs the
packages libegl1, libopengl0, libegl-mesa0 and libgl1-mesa-dri (Mesa software rendering, no GPU
needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np

from understudy.envs.errors import user_error
from understudy.envs.registry import make

DEFAULT_FPS = 30


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even width and height: pad one black row/column where needed."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
    return frame


class _FrameWriter:
    """Frames of one fixed size to one mp4 file (H.264, yuv420p), ffmpeg started on the first frame."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._size: Optional[tuple[int, int]] = None
        self._writer = None

    def write(self, frame: np.ndarray) -> None:
        frame = _even(np.asarray(frame, dtype=np.uint8))
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            import imageio_ffmpeg

            self._size = size
            self._writer = imageio_ffmpeg.write_frames(str(self.path), size, fps=self.fps, codec="libx264",
                                                       pix_fmt_out="yuv420p", macro_block_size=1,
                                                       ffmpeg_log_level="error")
            self._writer.send(None)  # start ffmpeg
        elif size != self._size:
            raise user_error(f"Rendered frame size changed from {self._size} to {size} while writing "
                             f"{self.path}; render at a fixed width and height.")
        self._writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _check_rgb(env: gym.Env, who: str) -> None:
    if env.render_mode != "rgb_array":
        raise user_error(f"{who} needs an env made with render_mode='rgb_array', got render_mode={env.render_mode!r}.")


def _render(env: gym.Env, first: bool) -> np.ndarray:
    if not first:
        return env.render()
    try:  # the first frame creates the GL context: the place a missing EGL shows up
        return env.render()
    except Exception as e:  # noqa: BLE001  (GL errors come in many types)
        raise user_error(f"Rendering failed ({type(e).__name__}: {e}). Headless MuJoCo rendering uses EGL "
                         "(MUJOCO_GL=egl): install libegl1, libopengl0, libegl-mesa0 and libgl1-mesa-dri, or set "
                         "MUJOCO_GL=osmesa with libosmesa6.") from e


class VideoRecorder(gym.Wrapper):
    """Writes the frame rendered after every reset and step to one mp4 file; finished on close().

    The env must be made with render_mode="rgb_array". All episodes go into the same file.
    """

    def __init__(self, env: gym.Env, path: str | Path, fps: Optional[float] = None):
        super().__init__(env)
        _check_rgb(env, "VideoRecorder")
        self.path = Path(path)
        self._out = _FrameWriter(self.path, float(fps or env.metadata.get("render_fps") or DEFAULT_FPS))

    @property
    def frames_written(self) -> int:
        return self._out.frames

    def _capture(self) -> None:
        self._out.write(_render(self.env, first=self._out.frames == 0))

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self._capture()
        return out

    def step(self, action):
        out = self.env.step(action)
        self._capture()
        return out

    def close(self):
        self._out.close()
        super().close()


class EpisodeVideos(gym.Wrapper):
    """Records every `every`-th episode (the 1st, (every+1)-th, ...) to `directory/episode_<k>.mp4`, k counted
    from 1 across the env's life. Frames are rendered only for recorded episodes."""

    def __init__(self, env: gym.Env, directory: str | Path, every: int, fps: Optional[float] = None,
                 first_episode: int = 1):
        super().__init__(env)
        _check_rgb(env, "EpisodeVideos")
        if every < 1:
            raise user_error(f"Videos every {every} episodes: give a positive number of episodes.")
        self.directory, self.every = Path(directory), int(every)
        self.fps = float(fps or env.metadata.get("render_fps") or DEFAULT_FPS)
        self.episode = first_episode - 1
        self._out: Optional[_FrameWriter] = None
        self.written: list[Path] = []

    def reset(self, **kwargs):
        self._finish()
        out = self.env.reset(**kwargs)
        self.episode += 1
        if (self.episode - 1) % self.every == 0:
            self._out = _FrameWriter(self.directory / f"episode_{self.episode:06d}.mp4", self.fps)
            self._out.write(_render(self.env, first=not self.written))
        return out

    def step(self, action):
        out = self.env.step(action)
        if self._out is not None:
            self._out.write(self.env.render())
            if out[2] or out[3]:
                self._finish()
        return out

    def _finish(self) -> None:
        if self._out is not None:
            self._out.close()
            self.written.append(self._out.path)
            self._out = None

    def close(self):
        self._finish()
        super().close()


def record_video(env_id: str, policy_fn: Optional[Callable[[Any], Any]], path: str | Path, episodes: int = 1,
                 seed: int = 0, fps: Optional[float] = None, **options) -> dict:
    """Run `episodes` episodes of make(env_id, **options) and write them to one mp4 at `path`.

    policy_fn(observation) -> action; None takes random actions. Episode k is reset with seed + k.
    Returns {"path", "returns", "lengths", "frames"}.
    """
    env = VideoRecorder(make(env_id, seed=seed, render_mode="rgb_array", **options), path, fps=fps)
    returns, lengths = [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, steps, done = 0.0, 0, False
            while not done:
                action = env.action_space.sample() if policy_fn is None else policy_fn(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    return {"path": str(path), "returns": returns, "lengths": lengths, "frames": env.frames_written}
