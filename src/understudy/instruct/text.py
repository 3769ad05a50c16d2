"""Instruction text -> what the policy network reads: word ids for a learned encoder, or the per-token states
of a frozen pretrained encoder (BERT family, from a local directory or hub id; states cached on disk).

Either way the instructions of a dataset are encoded once into a table (one row per distinct sentence) that
lives on the device beside the data; each step stores the row of its episode's sentence.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from understudy.language.tokenizer import WordTokenizer
from understudy.types import UnderstudyError


class InstructionEncoder:
    """`encode(sentences)` -> (tokens [n, L] int32 or states [n, L, E] float32, mask [n, L] float32)."""

    def __init__(self, tokenizer: Optional[WordTokenizer] = None, pretrained: Optional[str] = None,
                 max_tokens: int = 16, cache_dir: Optional[str] = None):
        if (tokenizer is None) == (pretrained is None):
            raise UnderstudyError("An instruction encoder is either learned (a word tokenizer) or pretrained (a path).")
        self.tokenizer, self.pretrained, self.max_tokens = tokenizer, pretrained, int(max_tokens)
        self._encoder = None
        if pretrained is not None:
            from understudy.language.pretrained import PretrainedTextEncoder

            self._encoder = PretrainedTextEncoder.load(pretrained, max_length=self.max_tokens, cache_dir=cache_dir)

    @classmethod
    def build(cls, sentences: list[str], *, text_encoder: str = "learned", max_tokens: int = 16,
              cache_dir: Optional[str] = None) -> "InstructionEncoder":
        if text_encoder == "learned":
            from understudy.language.tokenizer import words

            # as many positions as the longest training sentence (+1 for a longer paraphrase), at most max_tokens:
            # every padding position costs compute in every layer
            length = min(int(max_tokens), max(len(words(s)) for s in sentences) + 1) if sentences else int(max_tokens)
            return cls(tokenizer=WordTokenizer.build(sentences, max_length=length), max_tokens=length)
        return cls(pretrained=text_encoder, max_tokens=max_tokens, cache_dir=cache_dir)

    @property
    def vocab_size(self) -> int:
        """Word vocabulary of a learned encoder; 0 for a pretrained one (the network then projects states)."""
        return 0 if self.tokenizer is None else len(self.tokenizer.vocab)

    def encode(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._encoder is not None:
            states, mask = self._encoder.encode_tokens(list(sentences))
            return states.astype(np.float32), mask.astype(np.float32)
        ids, mask = self.tokenizer.encode(list(sentences))
        mask = mask.astype(np.float32)
        mask[:, 0] = 1.0  # an empty sentence still gives every query one key ([PAD] at position 0)
        return ids, mask

    def unknown_words(self, sentence: str) -> list[str]:
        return [] if self.tokenizer is None else self.tokenizer.unknown_words(sentence)

    def to_json(self) -> dict:
        if self.tokenizer is not None:
            return {"kind": "learned", "tokenizer": self.tokenizer.to_json(), "max_tokens": self.max_tokens}
        return {"kind": "pretrained", "source": self.pretrained, "fingerprint": self._encoder.fingerprint,
                "max_tokens": self.max_tokens}

    @classmethod
    def from_json(cls, d: dict, cache_dir: Optional[str] = None) -> "InstructionEncoder":
        if d.get("kind") == "learned":
            return cls(tokenizer=WordTokenizer.from_json(d["tokenizer"]), max_tokens=int(d["max_tokens"]))
        if d.get("kind") == "pretrained":
            encoder = cls(pretrained=d["source"], max_tokens=int(d["max_tokens"]), cache_dir=cache_dir)
            if encoder._encoder.fingerprint != d.get("fingerprint"):
                raise UnderstudyError(f"The pretrained text encoder at {d['source']} is not the one this policy was "
                                      "trained with (its files differ). Point to the same model files.")
            return encoder
        raise UnderstudyError(f"Unknown instruction encoder description {d.get('kind')!r}: the policy.json is damaged "
                              "or from a newer understudy.")


def instruction_table(encoder: InstructionEncoder, sentences: list[str]) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                                 np.ndarray]:
    """(distinct sentences, encoded [S, L(, E)], masks [S, L], row of each input sentence [n])."""
    distinct = sorted(set(sentences))
    row = {s: i for i, s in enumerate(distinct)}
    encoded, mask = encoder.encode(distinct)
    return distinct, encoded, mask, np.asarray([row[s] for s in sentences], np.int32)
