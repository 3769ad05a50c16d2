"""A word-level tokenizer for the from-scratch text encoder: lowercase words, a vocabulary built from the
training sentences, [PAD] = 0 and [UNK] = 1. Saved as JSON beside the model that uses it."""

from __future__ import annotations

import re

import numpy as np

from understudy.types import UnderstudyError

PAD, UNK = "[PAD]", "[UNK]"
_WORD = re.compile(r"[a-z0-9]+")


def words(sentence: str) -> list[str]:
    return _WORD.findall(sentence.lower())


class WordTokenizer:
    def __init__(self, vocab: list[str], max_length: int):
        if vocab[:2] != [PAD, UNK]:
            raise UnderstudyError(f"A word vocabulary must start with {PAD}, {UNK}; got {vocab[:2]}.")
        self.vocab, self.max_length = list(vocab), int(max_length)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, sentences: list[str], max_length: int | None = None) -> "WordTokenizer":
        """Vocabulary of every word in `sentences` (sorted, so the same sentences give the same ids)."""
        if not sentences:
            raise UnderstudyError("Cannot build a vocabulary from no sentences.")
        vocab = sorted({w for s in sentences for w in words(s)})
        longest = max(len(words(s)) for s in sentences)
        return cls([PAD, UNK, *vocab], max_length or longest + 4)  # headroom for longer unseen sentences

    def encode(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [n, max_length] int32 and mask [n, max_length] bool; longer sentences are truncated."""
        ids = np.zeros((len(sentences), self.max_length), np.int32)
        for i, s in enumerate(sentences):
            tokens = [self.index.get(w, 1) for w in words(s)][: self.max_length]
            ids[i, : len(tokens)] = tokens
        return ids, ids != 0

    def unknown_words(self, sentence: str) -> list[str]:
        return [w for w in words(sentence) if w not in self.index]

    def to_json(self) -> dict:
        return {"kind": "words", "vocab": self.vocab, "max_length": self.max_length}

    @classmethod
    def from_json(cls, d: dict) -> "WordTokenizer":
        try:
            return cls(list(d["vocab"]), int(d["max_length"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UnderstudyError(f"The saved tokenizer is malformed ({type(e).__name__}: {e}); it needs 'vocab' "
                                  "and 'max_length'. Re-train the reward model to rebuild it.") from e
