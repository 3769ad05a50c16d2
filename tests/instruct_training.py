"""A tiny instruction-following training run shared by the frozen-text-encoder tests: one sentence means
action -1.5, another +1.5; returns the trained policy and its reloaded export."""

import numpy as np


def train_two_sentence_policy(tmp_path, text_encoder: str, negative: str, positive: str, updates: int = 200):
    """(policy, reloaded policy, act(sentences) -> the reloaded policy's actions on a fixed window)."""
    import jax

    from understudy.data import save_dataset
    from understudy.data.episodes import Dataset
    from understudy.envs import make_spec
    from understudy.instruct.algo import Config
    from understudy.instruct.policy import InstructPolicy
    from understudy.train.common import RunArgs
    from understudy.train.instruct import initial_state, make_update_many, prepare

    spec = make_spec("Pendulum-v1")
    rng = np.random.default_rng(0)
    episodes = [{"observations": rng.standard_normal((6, 3)).astype(np.float32),
                 "actions": np.full((5, 1), -1.5 if e % 2 else 1.5, np.float32), "rewards": np.zeros(5),
                 "terminations": [False] * 5, "truncations": [False] * 4 + [True],
                 "instruction": [positive, negative][e % 2]} for e in range(8)]
    save_dataset(Dataset.from_episodes(episodes, metadata={"env_id": spec.env_id, "spec": spec.to_dict()}),
                 tmp_path / "data")
    cfg = Config(d_model=32, num_layers=1, num_heads=2, head_hidden_dims=(32,), batch_size=16, warmup_steps=5,
                 learning_rate=3e-3, text_encoder=text_encoder)
    setup = prepare(cfg, RunArgs(dataset=str(tmp_path / "data")))
    assert setup["net"].vocab_size == 0  # states in, projected
    tx, state, key = initial_state(cfg, setup, updates, 0)
    update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, setup["mesh"])
    state, key, _ = update_many(state, key, num_updates=updates)
    policy = InstructPolicy(setup["net"], jax.device_get(state.params), setup["encoder"], setup["spec"],
                            setup["normalizer"], setup["tasks"])
    policy.save(tmp_path / "p")
    loaded = InstructPolicy.load(tmp_path / "p")
    obs = episodes[0]["observations"][:4]

    def act(sentences, which=loaded):
        n = len(sentences)
        return which.act(np.stack([obs] * n), np.ones((n, 4), np.float32), list(sentences))

    return policy, loaded, act
