"""Decision Transformer (Chen et al. 2021), as in CORL's dt.py: a causal transformer over the last K steps'
(return-to-go, state, action) tokens that regresses each step's action from its state token.

Sequence, per window of K steps (oldest first): R_0, s_0, a_0, R_1, s_1, a_1, ..., R_{K-1}, s_{K-1}, a_{K-1}.
Each token is a linear embedding of its value plus a learned embedding of the step's time in its episode;
the sequence is layer-normed, passes `num_layers` pre-norm blocks under a causal mask, and the action a_t is
read (linear + tanh) from the output at s_t, which sees R_0..R_t, s_0..s_t and a_0..a_{t-1} only. The loss is
the MSE to the dataset's actions over the window's real steps (padding before an episode's start is masked).

Windows are right-aligned, as `understudy.data.samplers.sample_windows` draws them: the last position is the
newest step and padding sits in front. Padding tokens are never attended to by real tokens (each padding
token attends only to itself, so nothing leaks and nothing is undefined). Evaluation keeps the same layout:
the newest observation goes in the last position with a zero placeholder action (which its state token cannot
see), so acting at step t of an episode looks exactly like a training window that ends at step t.

Returns-to-go: R_t = r_t + r_{t+1} + ... + r_{T-1}, summed to the end of the episode as recorded (for an
episode cut by a time limit or by the end of the data, the rewards that were recorded), divided by
`return_scale` (CORL's reward_scale = 1 / return_scale). At evaluation R_0 = target_return / return_scale and
every reward received is subtracted (scaled the same way).

Inputs arrive prepared by the loop (understudy.train.sequence): observations standardized with the dataset's
mean/std (saved with the export), actions in [-1, 1], returns-to-go scaled, integer timesteps.

Defaults: the DT paper's and CORL dt.py's own defaults (batch 64, lr 1e-4, warmup 10k; 100k updates in both),
which fit a CPU. CORL's D4RL configs (configs/offline/dt/*.yaml) train with batch 4096 and lr 8e-4 for 100k
updates on a GPU: `--preset corl`. Everything else is shared: K=20, embedding 128, 3 layers, 1 head, dropout 0.1
(embedding, attention and residual), AdamW (0.9, 0.999) with weight decay 1e-4, linear warmup to lr over 10k
updates then constant, gradient clipping at 0.25, returns divided by 1000, timestep table of the episode length.
CORL evaluates two target returns per env (halfcheetah 12000/6000, hopper 3600/1800, walker2d 5000/2500,
close to D4RL's expert returns 12135/3234/4592 and half of them); we condition on one, `--target-return`,
by default the dataset's expert reference return (metadata ref_max_score) or else its best episode's return.

Measured here (CPU, 2 busy cores): an update with the defaults on HalfCheetah shapes takes ~0.4 s, so CORL's
100k updates are hours on a CPU and minutes on a GPU. Pendulum-v1 from 100 expert episodes (K=10, embedding 64,
2 layers, lr 3e-4): -137 after 3000 updates (BC: about -125); from 20 episodes only about -490, where
(return-to-go, timestep) nearly names the episode and the model recalls episodes instead of reading the state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from understudy.types import Batch, EnvSpec, UnderstudyError

DEFAULT_MAX_TIMESTEP = 1000  # timestep table when neither the env nor the config says how long episodes are


@dataclasses.dataclass(frozen=True)
class Config:
    """Decision Transformer settings (defaults: the DT paper's and CORL dt.py's; CORL's D4RL configs: --preset corl)."""

    context: int = 20
    """K: steps per window (3K tokens: return-to-go, state, action per step). CORL seq_len 20."""
    embed_dim: int = 128
    """Token embedding width. CORL 128."""
    num_layers: int = 3
    """Transformer blocks. CORL 3."""
    num_heads: int = 1
    """Attention heads per block. CORL 1."""
    dropout: float = 0.1
    """Dropout on the embedded sequence, the attention weights and both residual branches (CORL: 0.1 each)."""
    lr: float = 1e-4
    """AdamW peak learning rate, reached after --warmup-steps (CORL dt.py 1e-4; D4RL configs 8e-4, batch 4096)."""
    weight_decay: float = 1e-4
    """AdamW decoupled weight decay, on every parameter as in CORL. CORL 1e-4."""
    warmup_steps: int = 10_000
    """Linear learning-rate warmup: update i uses lr * min((i + 1) / warmup_steps, 1). CORL 10k."""
    max_grad_norm: Optional[float] = 0.25
    """Clip gradients to this global norm; None disables clipping. CORL 0.25."""
    batch_size: int = 64
    """Windows per gradient update (CORL dt.py 64; its D4RL configs 4096)."""
    return_scale: float = 1000.0
    """Returns-to-go are divided by this before the model sees them (CORL reward_scale 0.001 = 1/1000 for MuJoCo)."""
    target_return: Optional[float] = None
    """Return to ask for at evaluation (env units, unscaled). Default: the dataset's expert reference return (metadata ref_max_score) when it records one, else its best episode's return. CORL: halfcheetah 12000, hopper 3600, walker2d 5000 (and half of each)."""
    max_timestep: Optional[int] = None
    """Size of the timestep embedding table (later steps use the last entry). Default: the env's time limit or the dataset's longest episode, whichever is larger. CORL episode_len 1000."""
    normalize_observations: bool = True
    """Standardize observations with dataset mean/std (applied by the training loop, saved in the export). CORL does."""


PRESETS: dict[str, Config] = {
    # The DT paper / CORL dt.py defaults: batch 64 fits a CPU.
    "paper": Config(),
    # CORL's D4RL MuJoCo configs (configs/offline/dt/<env>/<dataset>_v2.yaml), meant for a GPU.
    "corl": Config(batch_size=4096, lr=8e-4),
}


class State(struct.PyTreeNode):
    """Transformer parameters, optimizer state, rng (dropout) and update count. Shapes are static fields."""

    params: Any
    opt_state: Any
    rng: jax.Array
    step: jax.Array  # int32 scalar
    obs_dim: int = struct.field(pytree_node=False, default=1)
    action_dim: int = struct.field(pytree_node=False, default=1)
    max_timestep: int = struct.field(pytree_node=False, default=DEFAULT_MAX_TIMESTEP)


# -- returns-to-go and timesteps (numpy, computed once per dataset) ------------------------------------
def returns_to_go(rewards: np.ndarray, episode_starts: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """For each step, the sum of its episode's rewards from that step to the episode's last recorded step,
    divided by `scale` [N] float32. `episode_starts` are the sorted first steps of the episodes [E] (0 first)."""
    from understudy.data.samplers import episode_start_index

    rewards = np.asarray(rewards, np.float64).reshape(-1)
    n = rewards.shape[0]
    if scale <= 0:
        raise UnderstudyError(f"--return-scale must be positive (returns-to-go are divided by it), got {scale}.")
    starts = np.asarray(episode_starts, np.int64).reshape(-1)
    episode_start_index(starts, n)  # checks the boundaries (raises UnderstudyError with the fix)
    ends = np.append(starts[1:], n)  # one past each episode's last step
    end_of = np.repeat(ends, ends - starts)  # [N]: one past the last step of each step's episode
    totals = np.concatenate([[0.0], np.cumsum(rewards)])
    return ((totals[end_of] - totals[np.arange(n)]) / scale).astype(np.float32)


def episode_timesteps(episode_starts: np.ndarray, num_steps: int) -> np.ndarray:
    """For each step, its index within its episode (0 at the first step) [N] int32."""
    from understudy.data.samplers import episode_start_index

    return (np.arange(num_steps) - episode_start_index(episode_starts, num_steps)).astype(np.int32)


def resolve_config(cfg: Config, ds, spec: EnvSpec) -> Config:
    """Fills the defaults that depend on the data: target_return and max_timestep (see their help)."""
    target = cfg.target_return
    if target is None:
        reference = ds.metadata.get("ref_max_score")
        target = float(reference) if reference is not None else float(np.max(ds.episode_returns()))
    max_timestep = cfg.max_timestep
    if max_timestep is None:
        max_timestep = max(int(spec.max_episode_steps or 0), int(np.max(ds.episode_lengths)))
    return dataclasses.replace(cfg, target_return=target, max_timestep=max_timestep)


# -- the network ---------------------------------------------------------------------------------------
_init = nn.initializers.normal(0.02)  # CORL's (and GPT-2's) init for linear and embedding weights


def attention_mask(step_mask: jax.Array) -> jax.Array:
    """[B, 1, 3K, 3K] bool from step_mask [B, K] (1 real, 0 padding): causal over the interleaved tokens; real
    tokens never attend to padding, and a padding token attends only to itself."""
    token_valid = jnp.repeat(step_mask.astype(bool), 3, axis=-1)  # [B, 3K]: R, s, a of each step
    n = token_valid.shape[-1]
    causal = jnp.tril(jnp.ones((n, n), bool))
    allowed = causal[None] & (token_valid[:, None, :] | jnp.eye(n, dtype=bool)[None])
    return allowed[:, None]


class Block(nn.Module):
    """Pre-norm block as CORL's: attention (dropout on weights and output) then a 4x GELU MLP (dropout on output).
    (understudy.instruct.model.Block has no dropout and a 2x MLP, hence this one.)"""

    embed_dim: int
    num_heads: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.embed_dim,
                                            dropout_rate=self.dropout, broadcast_dropout=False, kernel_init=_init,
                                            out_kernel_init=_init)(y, y, mask=mask, deterministic=deterministic)
        x = x + nn.Dropout(self.dropout)(y, deterministic=deterministic)
        y = nn.Dense(4 * self.embed_dim, kernel_init=_init)(nn.LayerNorm()(x))
        y = nn.Dense(self.embed_dim, kernel_init=_init)(nn.gelu(y, approximate=False))
        return x + nn.Dropout(self.dropout)(y, deterministic=deterministic)


class DecisionTransformer(nn.Module):
    """(states [B,K,obs], actions [B,K,A], returns_to_go [B,K], timesteps [B,K] int, mask [B,K]) -> actions [B,K,A]
    in [-1, 1]; position j's action depends only on positions <= j (and not on action j)."""

    obs_dim: int
    action_dim: int
    context: int = 20
    embed_dim: int = 128
    num_layers: int = 3
    num_heads: int = 1
    max_timestep: int = DEFAULT_MAX_TIMESTEP
    dropout: float = 0.1

    @nn.compact
    def __call__(self, states, actions, returns_to_go, timesteps, mask, deterministic: bool = True) -> jax.Array:
        B, K = mask.shape
        time = nn.Embed(self.max_timestep, self.embed_dim, embedding_init=_init, name="embed_timestep")(
            jnp.clip(timesteps.astype(jnp.int32), 0, self.max_timestep - 1))
        r = nn.Dense(self.embed_dim, kernel_init=_init, name="embed_return")(returns_to_go[..., None]) + time
        s = nn.Dense(self.embed_dim, kernel_init=_init, name="embed_state")(states) + time
        a = nn.Dense(self.embed_dim, kernel_init=_init, name="embed_action")(actions) + time
        x = jnp.stack([r, s, a], axis=2).reshape(B, 3 * K, self.embed_dim)  # R_0, s_0, a_0, R_1, ...
        x = nn.Dropout(self.dropout)(nn.LayerNorm(name="embed_norm")(x), deterministic=deterministic)
        attend = attention_mask(mask)
        for i in range(self.num_layers):
            x = Block(self.embed_dim, self.num_heads, self.dropout, name=f"block_{i}")(x, attend, deterministic)
        x = nn.LayerNorm(name="out_norm")(x)
        return jnp.tanh(nn.Dense(self.action_dim, kernel_init=_init, name="action_head")(x[:, 1::3]))


def network_description(cfg: Config, obs_dim: int, action_dim: int, max_timestep: int) -> dict:
    """Everything needed to rebuild the network (saved in the policy export)."""
    return {"obs_dim": obs_dim, "action_dim": action_dim, "context": cfg.context, "embed_dim": cfg.embed_dim,
            "num_layers": cfg.num_layers, "num_heads": cfg.num_heads, "max_timestep": max_timestep,
            "dropout": cfg.dropout}


def build_network(description: dict) -> DecisionTransformer:
    return DecisionTransformer(**description)


def _network(cfg: Config, state: State) -> DecisionTransformer:
    return build_network(network_description(cfg, state.obs_dim, state.action_dim, state.max_timestep))


def history_from_batch(batch: Batch) -> dict:
    """A training window (Batch with observations {state, return_to_go, timestep} [B, K], actions, mask) as the
    history dict that `act` and the network read."""
    obs = batch.observations
    return {"state": obs["state"], "action": batch.actions, "return_to_go": obs["return_to_go"],
            "timestep": obs["timestep"], "mask": batch.mask}


def apply_network(net: DecisionTransformer, params: Any, history: dict, *, deterministic: bool = True,
                  dropout_key: Optional[jax.Array] = None) -> jax.Array:
    """Predicted actions at every position [B, K, A] for a history dict (see history_from_batch)."""
    if history["state"].ndim != 3 or history["mask"].shape != history["state"].shape[:2]:
        raise ValueError(f"history shapes: state {history['state'].shape} should be [B, K, obs] and mask "
                         f"{history['mask'].shape} [B, K]")
    rngs = None if deterministic else {"dropout": dropout_key}
    return net.apply(params, history["state"], history["action"], history["return_to_go"], history["timestep"],
                     history["mask"], deterministic=deterministic, rngs=rngs)


def masked_mse(predicted: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over the real steps of the windows: predicted/target [B, K, A], mask [B, K]."""
    if predicted.shape != target.shape or predicted.shape[:2] != mask.shape:
        raise ValueError(f"masked_mse shapes: predicted {predicted.shape}, target {target.shape}, mask {mask.shape}")
    weights = mask.astype(jnp.float32)[..., None]
    per_entry = jnp.square(predicted - target) * weights
    return per_entry.sum() / jnp.maximum(weights.sum() * predicted.shape[-1], 1.0)


# -- the contract --------------------------------------------------------------------------------------
def _learning_rate(cfg: Config):
    warmup = max(int(cfg.warmup_steps), 1)
    return lambda count: cfg.lr * jnp.minimum((count + 1) / warmup, 1.0)


def _optimizer(cfg: Config) -> optax.GradientTransformation:
    adamw = optax.adamw(_learning_rate(cfg), b1=0.9, b2=0.999, weight_decay=cfg.weight_decay)
    if cfg.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


def _check(cfg: Config, spec: EnvSpec) -> None:
    if spec.discrete:
        raise UnderstudyError(f"The Decision Transformer here needs continuous actions, but {spec.env_id} has "
                              f"{spec.num_actions} discrete actions. Use bc --head categorical for discrete actions.")
    if isinstance(spec.observation, dict) or len(spec.obs_shape) != 1:
        raise UnderstudyError(f"The Decision Transformer reads flat vector observations; {spec.env_id} has "
                              f"{'dict' if isinstance(spec.observation, dict) else spec.obs_shape} observations.")
    for flag, value, low in (("--context", cfg.context, 1), ("--embed-dim", cfg.embed_dim, 1),
                             ("--num-layers", cfg.num_layers, 1), ("--num-heads", cfg.num_heads, 1),
                             ("--batch-size", cfg.batch_size, 1), ("--warmup-steps", cfg.warmup_steps, 0)):
        if value < low:
            raise UnderstudyError(f"DT {flag} must be at least {low}, got {value}.")
    if cfg.embed_dim % cfg.num_heads:
        raise UnderstudyError(f"DT --embed-dim ({cfg.embed_dim}) must be divisible by --num-heads ({cfg.num_heads}).")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UnderstudyError(f"DT --dropout must be in [0, 1), got {cfg.dropout}.")
    if cfg.return_scale <= 0:
        raise UnderstudyError(f"DT --return-scale must be positive (returns-to-go are divided by it), got "
                              f"{cfg.return_scale}.")
    if cfg.max_timestep is not None and cfg.max_timestep < 1:
        raise UnderstudyError(f"DT --max-timestep must be at least 1, got {cfg.max_timestep}.")


def init(cfg: Config, spec: EnvSpec, key: jax.Array) -> State:
    _check(cfg, spec)
    max_timestep = cfg.max_timestep or int(spec.max_episode_steps or DEFAULT_MAX_TIMESTEP)
    return _init_state(cfg, spec.obs_dim, spec.action_dim, max_timestep, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _init_state(cfg: Config, obs_dim: int, action_dim: int, max_timestep: int, key: jax.Array) -> State:
    key, init_key = jax.random.split(key)
    K = cfg.context
    net = build_network(network_description(cfg, obs_dim, action_dim, max_timestep))
    params = net.init(init_key, jnp.zeros((1, K, obs_dim)), jnp.zeros((1, K, action_dim)), jnp.zeros((1, K)),
                      jnp.zeros((1, K), jnp.int32), jnp.ones((1, K)))
    return State(params=params, opt_state=_optimizer(cfg).init(params), rng=key, step=jnp.zeros((), jnp.int32),
                 obs_dim=obs_dim, action_dim=action_dim, max_timestep=max_timestep)


def update(cfg: Config, state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    """One AdamW step on the masked action MSE of a batch of windows (leading axes [B, K])."""
    rng, dropout_key = jax.random.split(state.rng)
    net, history = _network(cfg, state), history_from_batch(batch)

    def loss_fn(params):
        predicted = apply_network(net, params, history, deterministic=False, dropout_key=dropout_key)
        return masked_mse(predicted, batch.actions, batch.mask)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = _optimizer(cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": _learning_rate(cfg)(state.step)}
    return state.replace(params=params, opt_state=opt_state, rng=rng, step=state.step + 1), metrics


def act(cfg: Config, state: State, history: dict, key: jax.Array, deterministic: bool) -> jax.Array:
    """The action [B, A] in [-1, 1] for the newest step of each history window.

    history: {state [B, K, obs] (normalized), action [B, K, A] (the newest is a placeholder it cannot see),
    return_to_go [B, K] (scaled), timestep [B, K] int, mask [B, K]}, right-aligned. The policy is
    deterministic (as in the paper and CORL): `key` and `deterministic` are accepted for the contract only.
    """
    del key, deterministic
    return apply_network(_network(cfg, state), state.params, history)[:, -1]


def policy_export(cfg: Config, state: State) -> tuple[dict, Any]:
    """(network description, parameters); understudy.algos.dt_policy saves them with the normalizer and target."""
    return network_description(cfg, state.obs_dim, state.action_dim, state.max_timestep), state.params
