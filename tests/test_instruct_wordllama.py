"""WordLlama token vectors as a frozen instruction encoder, on a tiny table and tokenizer written here in the
package's file formats (a `tokenizers` JSON and a safetensors `embedding.weight`)."""

import json

import numpy as np
import pytest
from instruct_training import train_two_sentence_policy

from understudy.instruct.text import InstructionEncoder
from understudy.instruct.wordllama import WordLlamaEncoder
from understudy.types import UnderstudyError

pytest.importorskip("tokenizers")

WORDS = ["[UNK]", "push", "shove", "the", "puck", "disc", "open", "door", "it"]


def write_wordllama(root, rows=None):
    """A word-level tokenizer over WORDS and a table whose "shove" row is "push"'s plus a little, "disc" near "puck"."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(root / "tiny_tokenizer_config.json"))
    rng = np.random.default_rng(0)
    table = rng.standard_normal((max(len(WORDS), rows or 0), 8)).astype(np.float32)
    table[2] = table[1] + 0.1 * table[2]
    table[5] = table[4] + 0.1 * table[5]
    table = table[:rows or len(WORDS)]
    save_file({"embedding.weight": table.astype(np.float16)}, str(root / "tiny_8.safetensors"))
    return root


def test_position_0_is_the_pooled_sentence_and_the_rest_are_its_tokens(tmp_path):
    enc = WordLlamaEncoder(f"wordllama:{write_wordllama(tmp_path / 'wl')}", max_length=3)
    states, mask = enc.encode_tokens(["shove the puck", ""])
    assert states.shape == (2, 3, 8) and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids = [2, 3, 4]
    np.testing.assert_allclose(states[0, 1:], enc.table[ids[:2]])  # truncated to 2 token positions
    pooled = enc.table[ids].mean(0)  # ... but pooled over the whole sentence
    np.testing.assert_allclose(states[0, 0], pooled / np.linalg.norm(pooled), rtol=1e-6)
    np.testing.assert_array_equal(states[1], 0.0)  # no tokens: a zero vector, still one key
    assert np.median(np.linalg.norm(enc.table, axis=1)) == pytest.approx(1.0, rel=1e-5)
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine(enc.sentence_vector("shove the disc"), enc.sentence_vector("push the puck")) > 0.9


def test_round_trip_and_changed_files_are_refused(tmp_path):
    root = write_wordllama(tmp_path / "wl")
    encoder = InstructionEncoder.build(["push the puck", "open the door"], text_encoder=f"wordllama:{root}",
                                       max_tokens=16)
    assert encoder.vocab_size == 0 and encoder.max_tokens == 6  # pooled + 3 tokens + 2 to spare
    states, mask = encoder.encode(["shove the disc"])
    assert states.shape == (1, 6, 8) and mask.dtype == np.float32 and mask.sum() == 4
    described = json.loads(json.dumps(encoder.to_json()))
    assert described["kind"] == "wordllama"
    again = InstructionEncoder.from_json(described)
    np.testing.assert_array_equal(again.encode(["shove the disc"])[0], states)
    write_wordllama(root, rows=len(WORDS) + 1)  # other weights under the same names
    with pytest.raises(UnderstudyError, match="not the ones this policy was trained with"):
        InstructionEncoder.from_json(described)


def test_bad_directories_and_files_get_clear_errors(tmp_path):
    with pytest.raises(UnderstudyError, match="not a directory"):
        WordLlamaEncoder(f"wordllama:{tmp_path / 'missing'}", max_length=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnderstudyError, match="exactly one"):
        WordLlamaEncoder(f"wordllama:{tmp_path / 'empty'}", max_length=4)
    short = write_wordllama(tmp_path / "short", rows=4)  # a table with fewer rows than the vocabulary
    with pytest.raises(UnderstudyError, match="do not belong together"):
        WordLlamaEncoder(f"wordllama:{short}", max_length=4)
    broken = write_wordllama(tmp_path / "broken")
    (broken / "tiny_8.safetensors").write_bytes(b"not a table")
    with pytest.raises(UnderstudyError, match="not a readable safetensors file"):
        WordLlamaEncoder(f"wordllama:{broken}", max_length=4)


def test_a_policy_trained_on_wordllama_vectors_reloads_and_carries_over_to_near_words(tmp_path):
    """Trained on "shove the puck" -> -1.5 and "open the door" -> +1.5 only, the policy gives "push the disc"
    (each word's vector near a training word's) the shove action; the export reloads with identical actions."""
    root = write_wordllama(tmp_path / "wl")
    policy, _, act = train_two_sentence_policy(tmp_path, f"wordllama:{root}", negative="shove the puck",
                                               positive="open the door")
    sentences = ["shove the puck", "open the door", "push the disc"]
    actions = act(sentences)
    np.testing.assert_array_equal(actions, act(sentences, policy))
    assert actions[0, 0] < -1.0 and actions[1, 0] > 1.0
    assert actions[2, 0] < 0.0
