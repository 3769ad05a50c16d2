"""The ensemble head (BC --ensemble-size): each method checked against its members applied one by one, the
export round trip, and BC's checks of the option."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from understudy.algos import bc
from understudy.checkpoint import export_policy
from understudy.nets.heads import head_config, make_head
from understudy.policy import load_policy, to_env_action
from understudy.types import ArraySpec, EnvSpec, UnderstudyError

B, OBS_DIM, ACTION_DIM, MEMBERS = 6, 4, 2, 3
SPEC = EnvSpec(env_id="x", family="gymnasium", observation=ArraySpec(shape=(OBS_DIM,), dtype="float32"),
               action=ArraySpec(shape=(ACTION_DIM,), dtype="float32", low=(-2.0, -1.0), high=(2.0, 1.0)))


def _ensemble(member, **options):
    head = make_head("ensemble", action_dim=ACTION_DIM, hidden_dims=(16,), member=member, members=MEMBERS,
                     member_options=tuple(sorted(options.items())))
    single = make_head(member, action_dim=ACTION_DIM, hidden_dims=(16,), **options)
    obs = jax.random.normal(jax.random.key(1), (B, OBS_DIM))
    params = head.init(jax.random.key(0), obs)
    members = [{"params": params["params"][f"heads_{i}"]} for i in range(MEMBERS)]
    return head, single, params, members, obs


def test_mode_loss_and_log_prob_combine_the_members():
    head, single, params, members, obs = _ensemble("gaussian", nll_beta=0.0)
    actions = jax.random.uniform(jax.random.key(2), (B, ACTION_DIM), minval=-1.0, maxval=1.0)
    modes = [single.apply(m, obs, method="mode") for m in members]
    assert not np.allclose(modes[0], modes[1])  # independently initialized members
    np.testing.assert_allclose(head.apply(params, obs, method="mode"), np.mean(modes, axis=0), rtol=1e-5, atol=1e-6)
    key = jax.random.key(3)
    member_losses = [single.apply(m, obs, actions, jax.random.fold_in(key, i), method="loss")
                     for i, m in enumerate(members)]
    np.testing.assert_allclose(head.apply(params, obs, actions, key, method="loss"), np.mean(member_losses, axis=0),
                               rtol=1e-5)
    log_probs = np.stack([single.apply(m, obs, actions, method="log_prob") for m in members]).astype(np.float64)
    mixture = np.log(np.mean(np.exp(log_probs), axis=0))  # the uniform mixture's density, computed directly
    np.testing.assert_allclose(head.apply(params, obs, actions, method="log_prob"), mixture, rtol=1e-4)


def test_each_sample_is_one_members_action():
    head, single, params, members, obs = _ensemble("mse")  # mse members sample their mode
    modes = np.stack([single.apply(m, obs, method="mode") for m in members])  # [E, B, A]
    samples = np.asarray(head.apply(params, obs, jax.random.key(4), method="sample"))
    matches = [[np.allclose(samples[b], modes[e, b], atol=1e-6) for e in range(MEMBERS)] for b in range(B)]
    assert all(any(row) for row in matches)
    many = [np.asarray(head.apply(params, obs, jax.random.key(k), method="sample")) for k in range(20)]
    picked = {int(np.argmax([np.allclose(s[0], modes[e, 0], atol=1e-6) for e in range(MEMBERS)])) for s in many}
    assert picked == set(range(MEMBERS))  # every member gets chosen


def test_export_round_trip_gives_identical_actions(tmp_path):
    head, _, params, _, obs = _ensemble("gmm", num_components=2, nll_beta=0.5)
    config = head_config("ensemble", ACTION_DIM, (16,), member="gmm", members=MEMBERS,
                         member_options=(("nll_beta", 0.5), ("num_components", 2)))
    assert make_head(**json.loads(json.dumps(config))) == head
    loaded = load_policy(export_policy(tmp_path / "policy", head_config=config, params=params, spec=SPEC))
    np.testing.assert_allclose(loaded(np.asarray(obs)), to_env_action(np.asarray(head.apply(params, obs,
                                                                                               method="mode")), SPEC))


def test_bc_trains_an_ensemble_and_refuses_bad_settings():
    cfg = bc.Config(head="mse", hidden_dims=(8,), batch_size=4, ensemble_size=MEMBERS)
    state = bc.init(cfg, SPEC, jax.random.PRNGKey(0))
    exported = bc.policy_export(cfg, state)[0]
    assert exported["name"] == "ensemble" and exported["members"] == MEMBERS and exported["member"] == "mse"
    assert bc.policy_export(dataclasses.replace(cfg, ensemble_size=1), bc.init(
        dataclasses.replace(cfg, ensemble_size=1), SPEC, jax.random.PRNGKey(0)))[0]["name"] == "mse"
    with pytest.raises(UnderstudyError, match="ensemble-size must be >= 1"):
        bc.init(dataclasses.replace(cfg, ensemble_size=0), SPEC, jax.random.PRNGKey(0))
    with pytest.raises(UnderstudyError, match="is not an action head"):
        bc.init(dataclasses.replace(cfg, head="ensemble"), SPEC, jax.random.PRNGKey(0))
    discrete = EnvSpec(env_id="y", family="gymnasium", observation=ArraySpec(shape=(OBS_DIM,), dtype="float32"),
                       action=ArraySpec(shape=(), dtype="int64"), num_actions=3)
    with pytest.raises(UnderstudyError, match="averages continuous actions"):
        bc.init(dataclasses.replace(cfg, head="categorical"), discrete, jax.random.PRNGKey(0))
    assert jnp.isfinite(bc.act(cfg, state, jnp.ones((2, OBS_DIM)), jax.random.PRNGKey(1), True)).all()


def test_bootstrap_weighs_each_members_examples_by_its_own_poisson_draws():
    cfg = bc.Config(head="mse", hidden_dims=(8,), batch_size=B, ensemble_size=MEMBERS, ensemble_bootstrap=True)
    state = bc.init(cfg, SPEC, jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.key(1), (B, OBS_DIM))
    batch = bc.Batch(observations=obs, actions=jnp.tanh(obs[:, :ACTION_DIM]), rewards=None, terminations=None,
                     next_observations=None)
    head = make_head("ensemble", action_dim=ACTION_DIM, hidden_dims=(8,), member="mse", members=MEMBERS)
    key = jax.random.key(5)
    loss_key, weight_key = jax.random.split(key)
    per_member = np.asarray(head.apply(state.params, obs, batch.actions, loss_key, method="member_losses"))
    assert per_member.shape == (MEMBERS, B)
    weights = np.asarray(jax.random.poisson(weight_key, 1.0, (MEMBERS, B)))
    assert not np.all(weights == weights[0])  # the members' resamples differ
    np.testing.assert_allclose(bc._training_loss(cfg, state, state.params, batch, key), np.mean(weights * per_member),
                               rtol=1e-5)
    plain = dataclasses.replace(cfg, ensemble_bootstrap=False)
    np.testing.assert_allclose(bc._training_loss(plain, state, state.params, batch, key), per_member.mean(), rtol=1e-5)
    # the validation loss is unweighted, and the update follows the weighted loss
    np.testing.assert_allclose(bc.evaluate_loss(cfg, state, batch), bc.evaluate_loss(plain, state, batch), rtol=1e-6)
    boot_state, _ = bc.update(cfg, state, batch)
    plain_state, _ = bc.update(plain, state, batch)
    assert not np.allclose(jax.tree.leaves(boot_state.params)[0], jax.tree.leaves(plain_state.params)[0])
    with pytest.raises(UnderstudyError, match="ensemble-bootstrap"):
        bc.init(dataclasses.replace(cfg, ensemble_size=1), SPEC, jax.random.PRNGKey(0))
