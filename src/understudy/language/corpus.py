"""Captioned trajectory corpus: MountainCar episodes from a spread of behaviours, each labelled by the rule-based
captioner and given one of its category's training sentences. The same behaviours drive MountainCar-v0 (push
left / none / right) and MountainCarContinuous-v0 (force -1 / 0 / +1).

Behaviours (parameters drawn per episode): uniform random; idle (mostly no push); braking (push against the
velocity, which damps any swing); energy pumping (push along the velocity) at strengths from weak to full;
partial attempts (pump for a while, then stop); near misses (pump until a chosen height, then brake); and
parking (climb to just below the goal and hold the car there).
The dataset keeps the environment's own rewards (unused by the reward model), the category as `task_id` and
the sentence as the episode's instruction; its metadata lists the categories and both sentence sets.
"""

from __future__ import annotations

import numpy as np

from understudy.data.episodes import Dataset
from understudy.types import UnderstudyError

LEFT, NOOP, RIGHT = 0, 1, 2

# behaviour -> share of episodes; chosen so that the three categories come out roughly balanced
BEHAVIOURS = {"random": 0.12, "idle": 0.10, "brake": 0.10, "pump": 0.26, "partial": 0.14, "near-miss": 0.16,
              "park": 0.12}


def _pump(velocity: float) -> int:
    return RIGHT if velocity >= 0 else LEFT


def _brake(velocity: float) -> int:
    return LEFT if velocity > 0 else RIGHT


def make_behaviour(name: str, rng: np.random.Generator):
    """A stateful policy (position, velocity, t) -> action for one episode, with its parameters drawn from rng."""
    if name == "random":
        return lambda x, v, t: int(rng.integers(3))
    if name == "idle":
        p = rng.uniform(0.6, 1.0)
        return lambda x, v, t: NOOP if rng.random() < p else int(rng.integers(3))
    if name == "brake":
        p = rng.uniform(0.5, 1.0)
        return lambda x, v, t: _brake(v) if rng.random() < p else int(rng.integers(3))
    if name == "pump":
        p = rng.uniform(0.1, 1.0)
        return lambda x, v, t: _pump(v) if rng.random() < p else int(rng.integers(3))
    if name == "partial":
        stop, after = int(rng.integers(10, 130)), rng.choice(["idle", "brake", "random"])
        then = make_behaviour(str(after), rng)
        return lambda x, v, t: _pump(v) if t < stop else then(x, v, t)
    if name == "park":
        # climb to a height just below the goal and hold the car there, what an agent rewarded for "reaching the
        # top" can stumble into; the rules label it by what happens. Energy control (pump while the energy
        # v^2/2 + g/3 sin(3x) is short of sin(3h)'s, brake above it), then hold where the engine beats gravity.
        height = rng.uniform(0.40, 0.495)
        k = 0.0025 / 3

        def act(x, v, t):
            if x > 0.38:
                return RIGHT if v < 0.3 * (height - x) else LEFT
            if 0.5 * v * v + k * np.sin(3 * x) < k * np.sin(3 * height):
                return _pump(v)
            return _brake(v)
        return act
    if name == "near-miss":
        height = rng.uniform(-0.25, 0.45)
        reached = [False]

        def act(x, v, t):
            reached[0] = reached[0] or x >= height
            return _brake(v) if reached[0] else _pump(v)
        return act
    raise UnderstudyError(f"Unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}.")


def mountaincar_corpus(episodes: int, *, seed: int = 0, progress: bool = False, continuous: bool = False) -> Dataset:
    """`episodes` captioned episodes of MountainCar-v0 (at most 200 steps each) or, with `continuous`,
    MountainCarContinuous-v0 (at most 999 steps) as a Dataset."""
    from understudy.envs import env_spec, make
    from understudy.language.captions import get_captioner

    if episodes < 3:
        raise UnderstudyError(f"A corpus needs at least 3 episodes (one per category); got --episodes {episodes}.")
    captioner = get_captioner("mountaincar-continuous" if continuous else "mountaincar")
    to_env = (lambda a: np.array([a - 1.0], np.float32)) if continuous else (lambda a: a)  # noqa: E731
    rng = np.random.default_rng(seed)
    env = make(captioner.env_id, seed=seed)
    names, shares = list(BEHAVIOURS), np.array(list(BEHAVIOURS.values()))
    recorded, behaviours = [], []
    from understudy.logging import Progress

    bar = Progress(episodes, f"corpus {captioner.env_id} (episodes)", enabled=progress)
    try:
        for e in range(episodes):
            behaviour = str(rng.choice(names, p=shares / shares.sum()))
            policy = make_behaviour(behaviour, rng)
            obs, _ = env.reset(seed=seed * 100_003 + e)
            states, actions, rewards, terms, truncs = [obs], [], [], [], []
            done, t = False, 0
            while not done:
                a = to_env(policy(float(obs[0]), float(obs[1]), t))
                obs, r, term, trunc, _ = env.step(a)
                states.append(obs), actions.append(a), rewards.append(r), terms.append(term), truncs.append(trunc)
                done, t = term or trunc, t + 1
            category = captioner.label(np.asarray(states))
            sentences = captioner.sentences[captioner.categories[category]]
            recorded.append({"observations": np.asarray(states, np.float32), "actions": np.asarray(actions),
                             "rewards": np.asarray(rewards, np.float32), "terminations": np.asarray(terms),
                             "truncations": np.asarray(truncs), "task_id": category,
                             "instruction": sentences[int(rng.integers(len(sentences)))]})
            behaviours.append(behaviour)
            bar.update(e + 1)
        spec = env_spec(env)
    finally:
        env.close()
        bar.close()
    counts = np.bincount([ep["task_id"] for ep in recorded], minlength=len(captioner.categories))
    metadata = {"env_id": captioner.env_id, "spec": spec.to_dict(), "policy": "behaviour mixture", "seed": seed,
                "captioner": captioner.name, "categories": list(captioner.categories),
                "category_counts": {c: int(n) for c, n in zip(captioner.categories, counts)},
                "sentences": captioner.sentences, "held_out_sentences": captioner.held_out,
                "behaviours": behaviours}
    return Dataset.from_episodes(recorded, metadata)


CORPORA = {"mountaincar": mountaincar_corpus,
           "mountaincar-continuous": lambda episodes, **kw: mountaincar_corpus(episodes, continuous=True, **kw)}


def make_corpus(name: str, episodes: int, *, seed: int = 0, progress: bool = False) -> Dataset:
    if name not in CORPORA:
        raise UnderstudyError(f"Unknown corpus {name!r}; available: {', '.join(CORPORA)}.")
    return CORPORA[name](episodes, seed=seed, progress=progress)
