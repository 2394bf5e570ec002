"""A T5-style tokenizer trained offline: a Unigram model over whitespace pieces with T5's
Metaspace pre-tokenization, ``<pad>`` 0 / ``</s>`` 1 / ``<unk>`` 2, wrapped as
``T5TokenizerFast``. No T5 vocabulary ships in any installable package, so the embedded
cascade and the tests train their own on their own text.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable

SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2


def train_unigram(lines: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    """Unigram pieces and scores, canonicalized so the ids are the same in every process.

    The ``tokenizers`` trainer is not bit-deterministic (hash-map order decides the unseen
    alphabet's and rarest characters' scores, and the last float bits of the others), so scores
    are rounded to 6 decimals, the rarest and the unseen characters get one fixed lowest score,
    and pieces are ordered by (score, piece). Every printable ASCII character stays encodable
    (no ``<unk>``), as in T5's real vocabulary: rare words such as ``beikkpic`` split into
    pieces."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import Unigram

    tok = Tokenizer(Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token="<unk>"
    )
    tok.train_from_iterator(list(lines), trainer=trainer)
    pieces = {p: round(s, 6) for p, s in json.loads(tok.to_str())["model"]["vocab"]}
    lowest = min(pieces.values())
    floor = lowest - 1.0
    for p, s in pieces.items():
        pieces[p] = floor if s < lowest + 0.01 else s
    learned = sorted((p for p in pieces if p not in SPECIALS), key=lambda p: (-pieces[p], p))
    unseen = sorted(set(string.ascii_letters + string.digits + string.punctuation) - set(pieces))
    learned += unseen
    pieces.update(dict.fromkeys(unseen, floor))
    return [(p, 0.0) for p in SPECIALS] + [(p, pieces[p]) for p in learned]


def t5_tokenizer(vocab: list[tuple[str, float]], model_max_length: int):
    """A ``T5TokenizerFast`` over ``vocab`` (``</s>`` appended to every text, no ``<extra_id_*>``
    sentinels: only T5's pre-training uses them)."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=list(vocab), extra_ids=0, model_max_length=model_max_length)
