"""WordNet word features: morphology, senses and hypernyms from a WNDB directory, and the instruction encoder
built on them (on a tiny WordNet written here, in the real file format)."""

import json

import numpy as np
import pytest
from instruct_training import train_two_sentence_policy

from understudy.instruct.text import InstructionEncoder
from understudy.instruct.wordnet import POS, WordNet, WordNetEncoder
from understudy.types import UnderstudyError

# synset key -> (pos, words, hypernym keys)
SYNSETS = {
    "push": ("v", ["push", "force"], []),
    "shove": ("v", ["shove"], ["push"]),
    "lift": ("v", ["lift", "raise", "elevate"], []),
    "drive": ("v", ["drive"], []),
    "disc": ("n", ["disc", "disk"], []),
    "puck": ("n", ["puck", "hockey_puck"], ["disc"]),
    "sprite": ("n", ["puck", "hob"], []),
    "door": ("n", ["door"], []),
}
SENSE_ORDER = {("n", "puck"): ["sprite", "puck"]}  # WordNet lists the sprite first


def write_wordnet(root, crlf=False):
    """A WNDB directory: data.<pos> lines addressed by byte offset (fixed width, so offsets can be computed
    before the pointers are written), index.<pos> naming each lemma's synsets."""
    root.mkdir(parents=True, exist_ok=True)
    offsets = {}
    for pos in POS:
        keys = [k for k, v in SYNSETS.items() if v[0] == pos]
        header = "  1 This is a tiny WordNet written by the tests.\n"

        def line(key, offset_of):
            _, words, parents = SYNSETS[key]
            ptrs = " ".join(f"@ {offset_of[p]:08d} {pos} 0000" for p in parents)
            word_fields = " ".join(f"{w} 0" for w in words)
            return f"{offset_of[key]:08d} 00 {pos} {len(words):02x} {word_fields} {len(parents):03d} {ptrs} | {key}\n"

        at, placeholder = len(header), {k: 0 for k in SYNSETS}
        for key in keys:
            offsets[key] = at
            at += len(line(key, placeholder))
        text = header + "".join(line(key, offsets) for key in keys)
        (root / f"data.{POS[pos]}").write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
        lemmas = {}
        for key in keys:
            for w in SYNSETS[key][1]:
                lemmas.setdefault(w, []).append(key)
        index = header
        for lemma in sorted(lemmas):
            senses = SENSE_ORDER.get((pos, lemma), lemmas[lemma])
            synsets = " ".join(f"{offsets[k]:08d}" for k in senses)
            index += f"{lemma} {pos} {len(senses)} 0 {len(senses)} 0 {synsets}\n"
        (root / f"index.{POS[pos]}").write_text(index)
    (root / "verb.exc").write_text("drove drive\n")
    return root


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def wordnet(tmp_path_factory):
    return WordNet.load(str(write_wordnet(tmp_path_factory.mktemp("wn") / "wordnet")))


def test_morphology_senses_and_hypernyms(wordnet):
    assert wordnet.lemmas("lifting", "v") == ["lift"]
    assert wordnet.lemmas("pushes", "v") == ["push"]
    assert wordnet.lemmas("drove", "v") == ["drive"]  # an exception-list form
    assert wordnet.lemmas("the", "n") == []
    shove = wordnet.concepts("shove")
    push_id = next(iter(wordnet.concepts("push")))
    assert shove[push_id] == pytest.approx(0.5)  # the hypernym at half the weight of the first sense
    puck = wordnet.concepts("puck")
    assert sorted(puck.values(), reverse=True) == pytest.approx([1.0, 0.5, 0.25])  # sprite, puck, puck's disc


def test_word_vectors_share_concepts_and_unknown_words_are_zero(wordnet):
    enc = WordNetEncoder(wordnet, max_length=6)
    v = enc.word_vector
    assert cosine(v("raise"), v("lift")) > 0.99  # one synset
    assert cosine(v("shove"), v("push")) > 0.3  # push is shove's hypernym
    # through the second sense's hypernym: 0.25 / |(1, 0.5, 0.25)| = 0.22, give or take random overlaps
    assert cosine(v("disc"), v("puck")) > 0.1 > abs(cosine(v("door"), v("puck")))
    assert abs(cosine(v("door"), v("push"))) < 0.2  # unrelated concepts: near-orthogonal directions
    assert not enc.known("the") and enc.known("lifting")
    states, mask = enc.encode_tokens(["shove the puck", ""])
    assert states.shape == (2, 6, 512) and mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(states[0, 1], 0.0)
    np.testing.assert_allclose(np.linalg.norm(states[0, [0, 2]], axis=-1), 1.0, atol=1e-5)


def test_a_copy_with_crlf_line_endings_gives_the_same_vectors(wordnet, tmp_path):
    moved = WordNetEncoder(WordNet.load(str(write_wordnet(tmp_path / "crlf", crlf=True))), max_length=4)
    for word in ("shove", "puck", "raising"):
        np.testing.assert_array_equal(moved.word_vector(word), WordNetEncoder(wordnet, 4).word_vector(word))


def test_instruction_encoder_round_trip_and_a_different_database_is_refused(wordnet, tmp_path):
    source = f"wordnet:{wordnet.path}"
    encoder = InstructionEncoder.build(["push the puck", "open the door"], text_encoder=source)
    assert encoder.vocab_size == 0 and encoder.max_tokens == 4  # longest training sentence + 1
    states, mask = encoder.encode(["shove the disc"])
    assert states.shape == (1, 4, 512) and mask.dtype == np.float32
    described = json.loads(json.dumps(encoder.to_json()))
    again = InstructionEncoder.from_json(described)
    np.testing.assert_array_equal(again.encode(["shove the disc"])[0], states)
    with open(wordnet.path / "index.noun", "a") as f:
        f.write("lid n 1 0 1 0 00000047\n")
    with pytest.raises(UnderstudyError, match="not the one this policy was trained with"):
        InstructionEncoder.from_json(described)


def test_a_directory_that_is_not_wordnet_names_the_missing_files(tmp_path):
    with pytest.raises(UnderstudyError, match="index.noun.*WNDB"):
        WordNet.load(str(tmp_path))


def test_a_policy_trained_on_wordnet_features_reloads_and_carries_over_to_a_synonym(wordnet, tmp_path):
    """Trained on "shove it" -> -1.5 and "open the door" -> +1.5 only, the policy gives the unseen "push it"
    (push is shove's hypernym) the shove action; the export reloads with identical actions."""
    policy, _, act = train_two_sentence_policy(tmp_path, f"wordnet:{wordnet.path}", negative="shove it",
                                               positive="open the door")
    sentences = ["shove it", "open the door", "push it"]
    actions = act(sentences)
    np.testing.assert_array_equal(actions, act(sentences, policy))
    assert actions[0, 0] < -1.0 and actions[1, 0] > 1.0
    assert actions[2, 0] < 0.0  # the unseen word "push" acts like "shove"


def test_related_words_are_synonyms_and_hypernyms_of_the_first_senses(wordnet):
    assert wordnet.related_words("puck") == ["hob", "hockey puck", "disc", "disk"]  # sprite, puck, puck's disc
    assert wordnet.related_words("shoving") == ["push", "force"]  # through its lemma, to its hypernym
    assert wordnet.related_words("puck", senses=1) == ["hob"]
    assert wordnet.related_words("the") == []


def test_instruction_variants_replace_known_words_at_their_rate_and_are_seeded(wordnet):
    from understudy.instruct.augment import instruction_variants, variant_table

    sentences = ["shove the puck", "open the door"]
    assert instruction_variants(sentences, wordnet, 3, 0.0, seed=0) == [[s] * 3 for s in sentences]
    every = instruction_variants(sentences, wordnet, 50, 1.0, seed=0)
    for variant in every[0]:  # both known words replaced, "the" kept
        verb, rest = variant.split(" the ")
        assert verb in ("push", "force") and rest in ("hob", "hockey puck", "disc", "disk")
    assert set(every[1]) == {"open the door"}  # "door" has no synonym or hypernym here, "open" is unknown
    half = instruction_variants(sentences, wordnet, 400, 0.5, seed=1)[0]
    assert 0.4 < np.mean([v.startswith("shove ") for v in half]) < 0.6
    assert instruction_variants(sentences, wordnet, 5, 0.5, seed=1) == instruction_variants(
        sentences, wordnet, 5, 0.5, seed=1)
    assert instruction_variants(sentences, wordnet, 5, 0.5, seed=1) != instruction_variants(
        sentences, wordnet, 5, 0.5, seed=2)
    with pytest.raises(UnderstudyError, match="word rate in"):
        instruction_variants(sentences, wordnet, 2, 1.5, seed=0)
    assert variant_table(3, 2).tolist() == [[0, 3, 4], [1, 5, 6], [2, 7, 8]]


def test_training_windows_read_their_instruction_or_its_variants(wordnet, tmp_path, monkeypatch):
    import jax

    from understudy.data import save_dataset
    from understudy.data.episodes import Dataset
    from understudy.envs import make_spec
    from understudy.instruct import wordnet as wordnet_module
    from understudy.instruct.algo import Config
    from understudy.train.common import RunArgs
    from understudy.train.instruct import make_batch, prepare

    monkeypatch.setattr(wordnet_module, "bundled_path", lambda: wordnet.path)  # the tiny database as the bundled one
    spec = make_spec("Pendulum-v1")
    rng = np.random.default_rng(0)
    sentences = ["shove the puck", "lift the door"]
    episodes = [{"observations": rng.standard_normal((6, 3)).astype(np.float32),
                 "actions": np.zeros((5, 1), np.float32), "rewards": np.zeros(5), "terminations": [False] * 5,
                 "truncations": [False] * 4 + [True], "instruction": sentences[e % 2]} for e in range(4)]
    save_dataset(Dataset.from_episodes(episodes, metadata={"env_id": spec.env_id, "spec": spec.to_dict()}),
                 tmp_path / "data")
    cfg = Config(d_model=16, num_layers=1, num_heads=2, head_hidden_dims=(16,), instruction_variants=4,
                 variant_word_rate=1.0)
    setup = prepare(cfg, RunArgs(dataset=str(tmp_path / "data")))
    table, encoder = setup["table"], setup["encoder"]
    assert table["encoded"].shape[0] == 2 * (1 + 4) and table["variants"].shape == (2, 5)
    assert encoder.unknown_words("push the disc") == []  # the learned vocabulary holds the variants' words
    batch = make_batch(setup["data"], table, jax.random.PRNGKey(0), 512, cfg.window)
    seen = {tuple(ids) for ids in np.asarray(batch["instruction"]).tolist()}
    originals = {tuple(ids) for ids in encoder.encode(sentences)[0].tolist()}
    assert originals < seen  # each sentence itself, and variants of it besides
    lift = {tuple(ids) for ids in encoder.encode(["lift the door", "raise the door", "elevate the door"])[0].tolist()}
    shove = {tuple(ids) for ids in encoder.encode(
        [f"{v} the {n}" for v in ("shove", "push", "force") for n in ("puck", "hob", "hockey puck", "disc", "disk")]
    )[0].tolist()}
    assert seen <= lift | shove  # never a word from another sentence's meaning
