"""The instruction-following policy network (note 004): a causal transformer over the instruction's tokens
followed by the last W observation tokens; the action at each window position is read from that
position's output by an action head from `understudy.nets.heads`.

Sequence layout, per example: [instruction tokens (L) | observation tokens (W)]. Instruction tokens attend
to the instruction only; the observation token at window position j attends to the instruction and to
observation tokens at positions <= j (causal), never to padding. Padding (window positions before the
episode started, instruction positions past the sentence) is marked by masks.

Observation encoders by kind:
  "state"  a flat float vector (normalized outside the network) -> MLP, FiLM-conditioned on the instruction -> token
  "grid"   BabyAI's symbolic 7x7x3 view + direction: per-cell embeddings (object, colour, state) plus a learned
           cell position, two per-cell layers FiLM-conditioned on the instruction (BabyAI's own conditioning),
           flattened -> token
  "pixels" a 64x64 RGB render: a small CNN, FiLM-conditioned on the instruction, plus an MLP on chosen
           state features (Meta-World: gripper and goal) -> token
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from understudy.language.reward_model import masked_mean
from understudy.nets.heads import make_head

GRID_VOCAB = 16  # minigrid's object (11), colour (6) and state (3) ids all fit


def attention_mask(instruction_mask: jax.Array, window_mask: jax.Array) -> jax.Array:
    """[B, 1, L+W, L+W] bool: who may attend to whom (see the module docstring).

    instruction_mask [B, L] and window_mask [B, W] are 1 for real tokens, 0 for padding.
    """
    L, W = instruction_mask.shape[-1], window_mask.shape[-1]
    key_valid = jnp.concatenate([instruction_mask, window_mask], axis=-1).astype(bool)  # [B, L+W]
    is_text = jnp.arange(L + W) < L
    position = jnp.arange(L + W)
    # text queries see text keys; observation queries see text keys and observation keys not after them
    allowed = jnp.where(is_text[:, None], is_text[None, :],
                        is_text[None, :] | (position[None, :] <= position[:, None]))  # [L+W, L+W]
    return (allowed[None] & key_valid[:, None, :])[:, None]


class Block(nn.Module):
    """Pre-norm transformer block."""

    d_model: int
    num_heads: int
    mlp_ratio: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.d_model)(y, y, mask=mask)
        y = nn.LayerNorm()(x)
        y = nn.Dense(self.mlp_ratio * self.d_model)(y)
        return x + nn.Dense(self.d_model)(nn.gelu(y))


class FiLM(nn.Module):
    """x * (1 + gamma(c)) + beta(c): the conditioning BabyAI's models use to let the instruction pick features."""

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array) -> jax.Array:
        gamma, beta = jnp.split(nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros)(condition), 2, -1)
        extra = x.ndim - gamma.ndim
        gamma = gamma.reshape(gamma.shape[:-1] + (1,) * extra + gamma.shape[-1:])
        beta = beta.reshape(beta.shape[:-1] + (1,) * extra + beta.shape[-1:])
        return x * (1.0 + gamma) + beta


class GridEncoder(nn.Module):
    d_model: int
    channels: int = 16
    film: bool = True

    @nn.compact
    def __call__(self, obs: dict, condition: jax.Array) -> jax.Array:
        image = jnp.clip(jnp.asarray(obs["image"], jnp.int32), 0, GRID_VOCAB - 1)  # [..., H, W, 3]
        # one-hot codes times a matrix, not an embedding gather: its gradient is a matmul, where the gather's
        # scatter-add was most of an update's time on CPU
        codes = jax.nn.one_hot(image, GRID_VOCAB).reshape(image.shape[:-1] + (3 * GRID_VOCAB,))
        x = nn.Dense(self.channels, use_bias=False, name="embed_cell")(codes)
        x = x + self.param("cell_position", nn.initializers.normal(0.02), image.shape[-3:-1] + (self.channels,))
        for i in range(2):
            x = nn.Dense(self.channels, name=f"cell_{i}")(x)
            if self.film:
                x = FiLM(name=f"film_{i}")(x, condition)
            x = nn.relu(x)
        x = nn.Dense(self.d_model, name="project")(x.reshape(x.shape[:-3] + (-1,)))
        direction = jnp.clip(jnp.asarray(obs["direction"], jnp.int32), 0, 3)
        return x + nn.Embed(4, self.d_model, name="embed_direction")(direction)


class StateEncoder(nn.Module):
    """MLP on the state; with `film`, its hidden layer is FiLM-conditioned on the instruction, so the task the
    instruction names shapes the observation token itself (states of different tasks can look alike)."""

    d_model: int
    hidden: int = 256
    film: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array, condition: jax.Array) -> jax.Array:
        x = nn.Dense(self.hidden)(jnp.asarray(obs, jnp.float32))
        if self.film:
            x = FiLM()(x, condition)
        return nn.Dense(self.d_model)(nn.relu(x))


class PixelEncoder(nn.Module):
    """A 64x64 RGB render (uint8) plus chosen state features -> token.

    The CNN patchifies (4x4, stride 4) and then halves twice (16 -> 8 -> 4): a quarter of the arithmetic of
    four stride-2 3x3 layers, which matters on CPU, where the images dominate an update. With `film` the
    middle feature map is FiLM-conditioned on the instruction. `state_features` picks the state entries the
    token also reads (empty: all of them); for Meta-World, the gripper and the goal, so that objects are
    seen only in the image.
    """

    d_model: int
    film: bool = True
    state_features: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, obs: dict, condition: jax.Array) -> jax.Array:
        image = jnp.asarray(obs["image"], jnp.float32) / 255.0
        lead = image.shape[:-3]
        x = image.reshape((-1,) + image.shape[-3:])
        x = nn.relu(nn.Conv(32, (4, 4), strides=(4, 4), padding="VALID", name="patchify")(x))
        x = nn.Conv(64, (3, 3), strides=(2, 2), name="conv_1")(x)
        if self.film:
            x = FiLM(name="film")(x, condition.reshape((-1, condition.shape[-1])))
        x = nn.relu(x)
        x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2), name="conv_2")(x))
        x = nn.Dense(self.d_model, name="project")(x.reshape(lead + (-1,)))
        state = jnp.asarray(obs["state"], jnp.float32)
        if self.state_features:
            state = state[..., jnp.asarray(self.state_features)]
        state = nn.relu(nn.Dense(256, name="state_hidden")(state))
        return x + nn.Dense(self.d_model, name="state_project")(state)


ENCODERS = {"state": StateEncoder, "grid": GridEncoder, "pixels": PixelEncoder}


class InstructNet(nn.Module):
    """obs window [B, W, ...] + window_mask [B, W] + instruction [B, L] (token ids, or [B, L, E] frozen
    encoder states) + instruction_mask [B, L] -> per-position features [B, W, d_model], and head methods on them.

    Heads see features flattened to [B * W, d_model]; `loss` is averaged over real window positions.
    """

    obs_kind: str
    action_dim: int
    head: str
    window: int = 4
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    vocab_size: int = 0  # learned text tokens; 0 when the instruction arrives as frozen encoder states
    max_instruction_tokens: int = 16
    film: bool = True
    state_features: tuple[int, ...] = ()  # "pixels" kind: the state entries read beside the image (empty: all)
    head_hidden_dims: tuple[int, ...] = (256,)
    head_options: tuple[tuple[str, Any], ...] = ()

    def setup(self):
        if self.vocab_size:
            self.token_embed = nn.Embed(self.vocab_size, self.d_model)
        else:
            self.text_project = nn.Dense(self.d_model)
        self.text_position = self.param("text_position", nn.initializers.normal(0.02),
                                        (self.max_instruction_tokens, self.d_model))
        self.step_position = self.param("step_position", nn.initializers.normal(0.02), (self.window, self.d_model))
        encoder = ENCODERS[self.obs_kind]
        if self.obs_kind == "pixels":
            self.encoder = encoder(self.d_model, film=self.film, state_features=self.state_features)
        else:
            self.encoder = encoder(self.d_model, film=self.film)
        self.blocks = [Block(self.d_model, self.num_heads) for _ in range(self.num_layers)]
        self.final_norm = nn.LayerNorm()
        self.action_head = make_head(self.head, action_dim=self.action_dim, hidden_dims=self.head_hidden_dims,
                                     **dict(self.head_options))

    def features(self, obs: Any, window_mask: jax.Array, instruction: jax.Array,
                 instruction_mask: jax.Array) -> jax.Array:
        text = self.token_embed(instruction) if self.vocab_size else self.text_project(instruction)
        text = text + self.text_position[: text.shape[-2]]
        condition = masked_mean(text, instruction_mask)  # [B, d]
        B, W = window_mask.shape
        steps = self.encoder(obs, jnp.broadcast_to(condition[:, None], (B, W, self.d_model)))
        steps = steps + self.step_position[:W]
        x = jnp.concatenate([text, steps], axis=1)
        mask = attention_mask(instruction_mask, window_mask)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x[:, -W:])

    def __call__(self, obs, window_mask, instruction, instruction_mask):
        f = self.features(obs, window_mask, instruction, instruction_mask)
        return self.action_head(f.reshape(-1, self.d_model))

    def loss(self, obs, window_mask, instruction, instruction_mask, actions, key) -> jax.Array:
        """Mean head loss over the real positions of every window."""
        f = self.features(obs, window_mask, instruction, instruction_mask)
        B, W = window_mask.shape
        flat_actions = actions.reshape((B * W,) + actions.shape[2:])
        per_position = self.action_head.loss(f.reshape(B * W, -1), flat_actions, key).reshape(B, W)
        weights = window_mask.astype(jnp.float32)
        return (per_position * weights).sum() / jnp.maximum(weights.sum(), 1.0)

    def mode(self, obs, window_mask, instruction, instruction_mask) -> jax.Array:
        """The most likely action at the last window position [B, ...]."""
        f = self.features(obs, window_mask, instruction, instruction_mask)
        return self.action_head.mode(f[:, -1])

    def sample(self, obs, window_mask, instruction, instruction_mask, key) -> jax.Array:
        f = self.features(obs, window_mask, instruction, instruction_mask)
        return self.action_head.sample(f[:, -1], key)


def observation_kind(observation_spec: Any) -> str:
    """'grid' for BabyAI dict observations, 'pixels' for {'state', 'image'} renders, else 'state'."""
    if isinstance(observation_spec, dict):
        keys = set(observation_spec)
        if keys == {"image", "direction"}:
            return "grid"
        if keys == {"state", "image"}:
            return "pixels"
        from understudy.types import UnderstudyError

        raise UnderstudyError(f"The instruction policy reads array observations, BabyAI's {{image, direction}} or "
                              f"{{state, image}} renders; this dataset has dict observations {sorted(keys)}.")
    return "state"


def build_net(description: dict) -> InstructNet:
    """The network a saved description (see policy.py) describes."""
    d = dict(description)
    d["head_hidden_dims"] = tuple(d["head_hidden_dims"])
    d["head_options"] = tuple(sorted((k, v) for k, v in d.get("head_options", {}).items()))
    d["state_features"] = tuple(d.get("state_features", ()))
    return InstructNet(**d)


def net_description(net: InstructNet) -> dict:
    return {"obs_kind": net.obs_kind, "action_dim": net.action_dim, "head": net.head, "window": net.window,
            "d_model": net.d_model, "num_layers": net.num_layers, "num_heads": net.num_heads,
            "vocab_size": net.vocab_size, "max_instruction_tokens": net.max_instruction_tokens, "film": net.film,
            "state_features": list(net.state_features), "head_hidden_dims": list(net.head_hidden_dims),
            "head_options": dict(net.head_options)}


def init_params(net: InstructNet, example: dict, key: jax.Array) -> Any:
    """Parameters for `net` from one example batch {obs, window_mask, instruction, instruction_mask}."""
    # jitted: an eager flax init dispatches (and compiles) every op of the transformer one by one
    return jax.jit(net.init)(key, example["obs"], example["window_mask"], example["instruction"],
                             example["instruction_mask"])
