"""Rule-based captioners: label a trajectory (or every prefix of it) with a behaviour category, and the
paraphrased sentences that describe each category, some held out so tests see wording never trained on.

A captioner has `name`, `env_id`, `categories` (names, in label order), `sentences` (category -> training
sentences), `held_out` (category -> held-out sentences), `label(states)` for a whole trajectory and
`prefix_labels(states)` for every prefix (label of states[:t+1] at index t).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from understudy.types import UnderstudyError


@dataclasses.dataclass(frozen=True)
class MountainCarCaptioner:
    """MountainCar (position, velocity) trajectories in three categories, by rules over the positions.

    bottom: every position stays within `valley_halfwidth` of the valley floor (x = -pi/6, where the track's
            height sin(3x) is lowest); the start positions, uniform in [-0.6, -0.4], are inside this band.
    swing:  leaves that band but never reaches the goal.
    top:    reaches the goal (position >= `goal_position`, which is where the environment terminates).
    """

    valley_halfwidth: float = 0.2
    goal_position: float = 0.5
    name: str = "mountaincar"
    env_id: str = "MountainCar-v0"
    categories: tuple[str, ...] = ("bottom", "swing", "top")

    @property
    def valley_floor(self) -> float:
        return float(-np.pi / 6)

    @property
    def sentences(self) -> dict[str, list[str]]:
        return {c: list(s) for c, s in _MOUNTAINCAR_TRAIN.items()}

    @property
    def held_out(self) -> dict[str, list[str]]:
        return {c: list(s) for c, s in _MOUNTAINCAR_HELD_OUT.items()}

    def prefix_labels(self, states: np.ndarray) -> np.ndarray:
        """Category index of every prefix: entry t labels states[: t + 1]. states: [T, 2] or [T] positions."""
        states = np.asarray(states, np.float64)
        if states.ndim == 2:
            if states.shape[1] != 2:
                raise UnderstudyError(f"MountainCar states have 2 columns (position, velocity); got shape "
                                      f"{states.shape}.")
            positions = states[:, 0]
        elif states.ndim == 1:
            positions = states
        else:
            raise UnderstudyError(f"Expected MountainCar states [T, 2] or positions [T]; got shape {states.shape}.")
        if positions.size == 0:
            raise UnderstudyError("Cannot caption an empty trajectory (it needs at least one state).")
        reached = np.maximum.accumulate(positions) >= self.goal_position
        left_valley = np.maximum.accumulate(np.abs(positions - self.valley_floor)) > self.valley_halfwidth
        labels = np.where(reached, 2, np.where(left_valley, 1, 0))
        return labels.astype(np.int64)

    def label(self, states: np.ndarray) -> int:
        """Category index of the whole trajectory."""
        return int(self.prefix_labels(states)[-1])


# The sentence the agent is trained on comes first among "top".
_MOUNTAINCAR_TRAIN = {
    "bottom": (
        "The car stays at the bottom of the valley",
        "The car does not move much and stays in the valley",
        "The car remains near the bottom of the valley",
        "The car barely moves away from the bottom",
        "The car stays low in the valley",
        "The car never leaves the bottom of the valley",
    ),
    "swing": (
        "The car swings out of the valley but does not reach the top",
        "The car rocks back and forth but fails to reach the top of the mountain",
        "The car climbs part of the way up but never reaches the flag",
        "The car gains some speed but cannot make it to the top",
        "The car leaves the valley but falls short of the top",
        "The car swings up the hill and back without reaching the top",
    ),
    "top": (
        "The car is able to reach the top of the mountain",
        "The car reaches the top of the mountain",
        "The car makes it to the top of the hill",
        "The car drives all the way up to the flag",
        "The car climbs the mountain and reaches the flag at the top",
        "The car gets to the top",
    ),
}

# Never used in training: new sentences, mostly recombining the training vocabulary, with a few words never seen
# in training (a from-scratch text encoder reads those as unknown tokens; a pretrained encoder knows them).
_MOUNTAINCAR_HELD_OUT = {
    "bottom": (
        "The car remains at the bottom",
        "The car does not leave the valley",
        "The car stays near the bottom of the hill",
    ),
    "swing": (
        "The car swings back and forth but never gets to the top",
        "The car climbs out of the valley but does not make it to the flag",
        "The car goes part of the way up the mountain but fails to reach the top",
    ),
    "top": (
        "The car manages to get up to the top of the hill",
        "The car climbs all the way to the top of the mountain",
        "The car reaches the flag",
    ),
}

CAPTIONERS = {
    "mountaincar": MountainCarCaptioner,
    # MountainCarContinuous-v0 ends at position >= 0.45 (with velocity >= 0), not 0.5
    "mountaincar-continuous": lambda: MountainCarCaptioner(goal_position=0.45, name="mountaincar-continuous",
                                                           env_id="MountainCarContinuous-v0"),
}


def get_captioner(name: str):
    if name not in CAPTIONERS:
        raise UnderstudyError(f"Unknown captioner {name!r}; available: {', '.join(CAPTIONERS)}.")
    return CAPTIONERS[name]()
