"""Corpus BLEU of a seq2seq model's translations (sacrebleu), for the MT-LSTM of CoVe.

Decodes the Multi30k split's source sentences (beam search; beam=1 greedy) and scores them
against the split's references, both in the task's target tokenization (lower-cased German
words and punctuation, data_pipelines.translation.target_tokenize): tokenized, lower-cased BLEU
(sacrebleu tokenize='none'); target words outside the vocabulary decode as `<unk>`. Also the
library of the `python -m tlx.translate` CLI.
"""

import time

import jax
import numpy as np

from data_pipelines import translation, vocabularies
from tlx.evaluators import base
from tlx.models import cove


def decode(model, params, src_ids: list[np.ndarray], seq_len: int, *, beam: int, alpha: float,
           batch: int, max_len: int) -> list[list[int]]:  # fmt: skip
    """Target ids (EOS and padding removed) of each source row, in order."""
    out = []
    for start in range(0, len(src_ids), batch):
        rows = src_ids[start : start + batch]
        ids, mask = translation.pad_rows(rows + [rows[-1]] * (batch - len(rows)), seq_len)
        inputs = {"input_ids": ids, "input_mask": mask}
        if beam == 1:
            hyp = cove.greedy_decode(model, params, inputs, max_len=max_len)
        else:
            hyp = cove.beam_search(
                model, params, inputs, beam_size=beam, max_len=max_len, alpha=alpha
            )
        for row in np.asarray(jax.device_get(hyp))[: len(rows)]:
            end = np.flatnonzero(row == translation.EOS)
            out.append(row[: end[0] if len(end) else len(row)].tolist())
    return out


def translate(model, params, cfg, split: str, *, beam: int, alpha: float, batch: int,
              limit: int = 0) -> tuple[dict, list[str]]:  # fmt: skip
    """({bleu, precisions, brevity_penalty, sys_len, ref_len, signature, sentences,
    decode_seconds}, hypotheses) for `split` (its first `limit` sentences if > 0)."""
    import sacrebleu

    if split not in translation.SPLITS:
        raise base.ConfigError(f"split={split!r}: expected one of {list(translation.SPLITS)}")
    options = translation.TranslationOptions(**cfg.data.options)
    en, de = translation.read_split(split)
    if limit:
        en, de = en[:limit], de[:limit]
    src = vocabularies.encode_batch(vocabularies.get_vocabulary(cfg.data.vocab), en)
    seq_len = max(len(s) for s in src)  # every source word, even past the training length
    max_len = cfg.data.seq_len + 16  # test sentences may outgrow the training length
    start = time.time()
    hyp_ids = decode(model, params, src, seq_len, beam=beam, alpha=alpha, batch=batch,
                     max_len=max_len)  # fmt: skip
    seconds = time.time() - start
    tokens = translation.target_vocabulary(options).tokens
    hyps = [" ".join("<unk>" if i == translation.UNK else tokens[i] for i in h) for h in hyp_ids]
    refs = [" ".join(translation.target_tokenize(s)) for s in de]
    bleu = sacrebleu.metrics.BLEU(tokenize="none")
    score = bleu.corpus_score(hyps, [refs])
    return {
        "bleu": score.score,
        "precisions": score.precisions,
        "brevity_penalty": score.bp,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": str(bleu.get_signature()),
        "sentences": len(hyps),
        "decode_seconds": seconds,
    }, hyps


class Bleu(base.Evaluator):
    """{bleu (0-100, sacrebleu's scale), brevity_penalty, sentences} on the split. Options:
    beam (1: greedy), alpha (GNMT length penalty), batch (sentences decoded at once), limit
    (the first N sentences; 0: all)."""

    reads_split = False  # it reads the raw Multi30k files, not the task's split

    def __init__(self, name, setup, cfg, *, beam=1, alpha=0.6, batch=128, limit=0, **options):
        super().__init__(name, setup, cfg, **options)
        self.beam, self.alpha, self.batch, self.limit = beam, alpha, batch, limit

    def run(self, params) -> dict[str, float]:
        result, _ = translate(self.setup.model, params, self.cfg, self.split, beam=self.beam,
                              alpha=self.alpha, batch=self.batch, limit=self.limit)  # fmt: skip
        return {k: float(result[k]) for k in ("bleu", "brevity_penalty", "sentences")}
