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
