"""Trajectory–sentence reward model: how well does a trajectory match a sentence?

Trajectory tokens come from two channels, states and actions: every `chunk` consecutive steps of a channel
become one token (a linear map of the chunk's values and validity flags), plus chunk-position and channel
embeddings. Sentence tokens come from a word embedding learned from scratch, or from the per-token states of
a frozen pretrained encoder (projected). Each modality runs its own self-attention; then cross-modal attention
runs in both directions (trajectory attends to sentence, sentence attends to trajectory), each side is pooled
over its mask, and an MLP turns the pooled pair into one scalar score. An auxiliary head classifies the
trajectory's category from the trajectory branch alone.

`RewardModel` holds parameters + featurization (observation normalizer, tokenizer or encoder reference) and
saves as `reward_model.safetensors` + `reward_model.json`, like a policy export.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from understudy.types import UnderstudyError

REWARD_MODEL_FORMAT = "understudy.reward_model"
REWARD_MODEL_VERSION = 1


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Shape of the reward model network (saved with the model)."""

    embed_dim: int = 64
    """Width of every token."""
    num_heads: int = 4
    """Attention heads in every attention layer."""
    trajectory_layers: int = 1
    """Self-attention blocks over trajectory tokens."""
    text_layers: int = 1
    """Self-attention blocks over sentence tokens."""
    chunk: int = 10
    """Environment steps per trajectory token (per channel)."""


# -- network ---------------------------------------------------------------------------------------------
def _attention_mask(query_mask, key_mask):
    return (query_mask[:, None, :, None] & key_mask[:, None, None, :])


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of x [B, L, D] over the positions where mask [B, L] is true."""
    w = mask.astype(x.dtype)[..., None]
    return (x * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


class Block(nn.Module):
    """Pre-norm transformer block; with `context` it is cross-attention from x to context."""

    dim: int
    heads: int

    @nn.compact
    def __call__(self, x, x_mask, context=None, context_mask=None):
        q = nn.LayerNorm()(x)
        kv = q if context is None else nn.LayerNorm()(context)
        kv_mask = x_mask if context is None else context_mask
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.dim)(
            q, kv, mask=_attention_mask(x_mask, kv_mask))
        h = nn.Dense(2 * self.dim)(nn.LayerNorm()(x))
        return x + nn.Dense(self.dim)(nn.gelu(h))


class TrajectorySentenceScorer(nn.Module):
    """(states [B,T,D], actions [B,T,A], valid [B,T], text [B,S] ids or [B,S,H] states, text_mask [B,S])
    -> (score [B], category logits [B, num_categories]). T must be a multiple of `net.chunk`."""

    net: NetworkConfig
    vocab_size: int  # 0 when the text arrives as pretrained token states
    num_categories: int
    max_text_length: int

    @nn.compact
    def __call__(self, states, actions, valid, text, text_mask):
        B, T, _ = states.shape
        C, d = self.net.chunk, self.net.embed_dim
        if T % C:
            raise ValueError(f"trajectory length {T} is not a multiple of the chunk {C}")
        L = T // C
        v = valid.astype(states.dtype)[..., None]

        def chunks(x):  # [B, T, F] -> [B, L, C*F]
            return x.reshape(B, L, -1)

        state_tokens = nn.Dense(d, name="state_tokens")(chunks(jnp.concatenate([states * v, v], -1)))
        action_tokens = nn.Dense(d, name="action_tokens")(chunks(jnp.concatenate([actions * v, v], -1)))
        position = self.param("trajectory_position", nn.initializers.normal(0.02), (L, d))
        channel = self.param("channel", nn.initializers.normal(0.02), (2, d))
        traj = jnp.concatenate([state_tokens + position + channel[0], action_tokens + position + channel[1]], 1)
        chunk_mask = valid.reshape(B, L, C).any(-1)
        traj_mask = jnp.concatenate([chunk_mask, chunk_mask], 1)
        for i in range(self.net.trajectory_layers):
            traj = Block(d, self.net.num_heads, name=f"trajectory_block{i}")(traj, traj_mask)

        if self.vocab_size:
            words = nn.Embed(self.vocab_size, d, name="word_embedding")(text)
            words = words + self.param("text_position", nn.initializers.normal(0.02), (self.max_text_length, d))
        else:  # frozen pretrained token states: only the projection is learned
            words = nn.Dense(d, name="text_projection")(text)
        for i in range(self.net.text_layers):
            words = Block(d, self.net.num_heads, name=f"text_block{i}")(words, text_mask)

        category_logits = nn.Dense(self.num_categories, name="category_head")(
            nn.LayerNorm()(masked_mean(traj, traj_mask)))
        traj_x = Block(d, self.net.num_heads, name="trajectory_to_text")(traj, traj_mask, words, text_mask)
        words_x = Block(d, self.net.num_heads, name="text_to_trajectory")(words, text_mask, traj, traj_mask)
        p_traj = nn.LayerNorm()(masked_mean(traj_x, traj_mask))
        p_text = nn.LayerNorm()(masked_mean(words_x, text_mask))
        h = nn.gelu(nn.Dense(d)(jnp.concatenate([p_traj, p_text, p_traj * p_text], -1)))
        return nn.Dense(1, name="score")(h)[..., 0], category_logits


# -- losses ------------------------------------------------------------------------------------------------
def pairwise_loss(score_positive: jnp.ndarray, score_negative: jnp.ndarray,
                  weight: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Mean of -log sigmoid(r(tau, s+) - r(tau, s-)) over pairs [B] (weighted mean when `weight` is given)."""
    if score_positive.shape != score_negative.shape or score_positive.ndim != 1:
        raise ValueError(f"pairwise_loss wants two [B] score vectors; got {score_positive.shape} and "
                         f"{score_negative.shape}")
    losses = -jax.nn.log_sigmoid(score_positive - score_negative)
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def category_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy of category logits [B, C] against integer labels [B]."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"category_loss wants logits [B, C] and labels [B]; got {logits.shape} and {labels.shape}")
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()


# -- featurization -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrajectoryFormat:
    """How raw trajectories become network inputs: normalized states, one-hot (discrete) or raw actions,
    padded to `max_steps` rows (a multiple of the chunk). Row t holds state t and the action taken in it."""

    obs_dim: int
    num_actions: int  # discrete: number of actions; 0 for continuous
    action_dim: int  # continuous: action size; discrete: num_actions (one-hot width)
    max_steps: int
    obs_mean: tuple[float, ...]
    obs_std: tuple[float, ...]

    def featurize(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One trajectory (or prefix): states [n, D] (n >= 1), actions [n-1] or [n-1, A] (the actions between
        them) -> (states [max_steps, D], actions [max_steps, A], valid [max_steps]). Longer ones keep their end."""
        states = np.asarray(states, np.float32).reshape(len(states), -1)
        if states.shape[1] != self.obs_dim:
            raise UnderstudyError(f"The reward model expects {self.obs_dim}-dimensional states; got shape "
                                  f"{states.shape}.")
        actions = np.asarray(actions)
        if len(actions) != len(states) - 1:
            raise UnderstudyError(f"A trajectory of {len(states)} states has {len(states) - 1} actions between them; "
                                  f"got {len(actions)}.")
        onehot = self.one_hot(actions)
        acts = np.concatenate([onehot, np.zeros((1, self.action_dim), np.float32)])  # no action after the last state
        n = min(len(states), self.max_steps)
        out_s = np.zeros((self.max_steps, self.obs_dim), np.float32)
        out_a = np.zeros((self.max_steps, self.action_dim), np.float32)
        out_s[:n] = (states[-n:] - np.asarray(self.obs_mean, np.float32)) / np.asarray(self.obs_std, np.float32)
        out_a[:n] = acts[-n:]
        valid = np.arange(self.max_steps) < n
        return out_s, out_a, valid

    def one_hot(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if self.num_actions:
            return np.eye(self.num_actions, dtype=np.float32)[actions.astype(np.int64).reshape(-1)]
        return actions.astype(np.float32).reshape(len(actions), self.action_dim)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# -- the model object ------------------------------------------------------------------------------------------
class RewardModel:
    """A trained reward model with everything needed to score raw trajectories against sentences.

    score(states, actions, sentences) -> scores; RewardModel.load(path); model.save(path).
    """

    def __init__(self, *, params: Any, net: NetworkConfig, trajectory: TrajectoryFormat, categories: list[str],
                 text_encoder: dict, metadata: Optional[dict] = None):
        # on device once: numpy parameters would be copied to the device again at every call
        self.params = None if params is None else jax.device_put(params)
        self.net, self.trajectory = net, trajectory
        self.categories = list(categories)
        self.text_encoder = dict(text_encoder)  # {"kind": "words", vocab, max_length} | {"kind": "pretrained", ...}
        self.metadata = dict(metadata or {})
        self._tokenizer, self._pretrained = None, None
        if self.text_encoder["kind"] == "words":
            from understudy.language.tokenizer import WordTokenizer

            self._tokenizer = WordTokenizer.from_json(self.text_encoder)
        self.module = TrajectorySentenceScorer(self.net, self.vocab_size, len(self.categories), self.max_text_length)
        self._apply = jax.jit(self.module.apply)
        self._text_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- text ---------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer.vocab) if self._tokenizer is not None else 0

    @property
    def max_text_length(self) -> int:
        return int(self.text_encoder["max_length"])

    def encode_text(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Network text inputs for sentences: ids [n, S] (from scratch) or token states [n, S, H] (pretrained)."""
        missing = [s for s in dict.fromkeys(sentences) if s not in self._text_cache]
        if missing:
            if self._tokenizer is not None:
                ids, mask = self._tokenizer.encode(missing)
            else:
                ids, mask = self.pretrained_encoder().encode_tokens(missing)
            for s, i, m in zip(missing, ids, mask):
                self._text_cache[s] = (i, m)
        return (np.stack([self._text_cache[s][0] for s in sentences]),
                np.stack([self._text_cache[s][1] for s in sentences]))

    def pretrained_encoder(self):
        if self._pretrained is None:
            from understudy.language.pretrained import PretrainedTextEncoder

            enc = self.text_encoder
            self._pretrained = PretrainedTextEncoder.load(enc["name"], max_length=int(enc["max_length"]),
                                                          cache_dir=enc.get("cache_dir"))
            if enc.get("fingerprint") and self._pretrained.fingerprint != enc["fingerprint"]:
                raise UnderstudyError(
                    f"The text encoder at {enc['name']} (fingerprint {self._pretrained.fingerprint}) is not the one this "
                    f"reward model was trained with (fingerprint {enc['fingerprint']}). Point it at the same encoder "
                    "files, or re-train the reward model.")
        return self._pretrained

    # -- scoring ------------------------------------------------------------------------------------------
    def scores_from_features(self, states, actions, valid, text, text_mask) -> np.ndarray:
        score, _ = self._apply({"params": self.params}, states, actions, valid, text, text_mask)
        return np.asarray(score)

    def score(self, states: np.ndarray, actions: np.ndarray, sentences: list[str] | str) -> np.ndarray:
        """Score one trajectory (states [n, D], actions [n-1]) against each sentence -> [len(sentences)]."""
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        s, a, v = self.trajectory.featurize(states, actions)
        text, mask = self.encode_text(sentences)
        n = len(sentences)
        return self.scores_from_features(np.repeat(s[None], n, 0), np.repeat(a[None], n, 0),
                                         np.repeat(v[None], n, 0), text, mask)

    def score_matrix(self, trajectories: list[tuple[np.ndarray, np.ndarray]], sentences: list[str],
                     batch: int = 256) -> np.ndarray:
        """Scores [num_trajectories, num_sentences] for (states, actions) trajectories."""
        feats = [self.trajectory.featurize(s, a) for s, a in trajectories]
        S = np.stack([f[0] for f in feats]), np.stack([f[1] for f in feats]), np.stack([f[2] for f in feats])
        text, mask = self.encode_text(sentences)
        out = np.zeros((len(feats), len(sentences)), np.float32)
        pairs = [(i, j) for i in range(len(feats)) for j in range(len(sentences))]
        for k in range(0, len(pairs), batch):
            ii, jj = np.array(pairs[k:k + batch]).T
            pad = batch - len(ii)  # fixed batch size: one compilation
            ii_p, jj_p = np.pad(ii, (0, pad)), np.pad(jj, (0, pad))
            r = self.scores_from_features(S[0][ii_p], S[1][ii_p], S[2][ii_p], text[jj_p], mask[jj_p])
            out[ii, jj] = r[: len(ii)]
        return out

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from understudy.checkpoint import flatten_params, write_export

        description = {"format": REWARD_MODEL_FORMAT, "version": REWARD_MODEL_VERSION,
                       "network": dataclasses.asdict(self.net), "trajectory": self.trajectory.to_json(),
                       "categories": self.categories, "text_encoder": self.text_encoder, "metadata": self.metadata}
        return write_export(path, flatten_params(jax.device_get(self.params)), description, "reward_model")

    @classmethod
    def load(cls, path: str | Path) -> "RewardModel":
        from understudy.checkpoint import read_export_files, unflatten_params

        path = Path(path)
        if not (path / "reward_model.json").exists() and (path / "model" / "reward_model.json").exists():
            path = path / "model"  # the training run's directory
        if not (path / "reward_model.json").exists():
            raise UnderstudyError(f"{path} is not a reward model (no reward_model.json). Pass a directory written by "
                                  "`understudy language train-reward` (its --out).")
        d, tensors = read_export_files(path, "reward_model", REWARD_MODEL_FORMAT,
                                       required=("network", "trajectory", "categories", "text_encoder"),
                                       redo="re-train the reward model")
        params = unflatten_params(tensors)
        json_path = path / "reward_model.json"
        try:
            model = cls(params=params, net=NetworkConfig(**d["network"]),
                        trajectory=TrajectoryFormat(**{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in d["trajectory"].items()}),
                        categories=d["categories"], text_encoder=d["text_encoder"], metadata=d.get("metadata"))
        except (KeyError, TypeError) as e:
            raise UnderstudyError(f"{json_path} lacks or mangles a field ({type(e).__name__}: {e}); the reward model "
                                  "is damaged. Re-train it.") from None
        model.check_params()
        return model

    def check_params(self) -> None:
        """The stored parameters must have exactly the shapes the described network builds."""
        T, D, A = self.trajectory.max_steps, self.trajectory.obs_dim, self.trajectory.action_dim
        S = self.max_text_length
        text = (jnp.zeros((1, S), jnp.int32) if self.vocab_size
                else jnp.zeros((1, S, int(self.text_encoder["hidden_size"])), jnp.float32))
        like = jax.eval_shape(lambda: self.module.init(jax.random.PRNGKey(0), jnp.zeros((1, T, D)), jnp.zeros((1, T, A)),
                                                       jnp.ones((1, T), bool), text, jnp.ones((1, S), bool)))["params"]
        want, have = _shapes(like), _shapes(self.params)
        if want != have:
            diff = sorted(set(want.items()) ^ set(have.items()))[:3]
            raise UnderstudyError(f"The reward model's weights do not match its description (first differences: {diff}); "
                                  "the files are from different models or damaged. Re-train the reward model.")


def _shapes(tree) -> dict:
    return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
