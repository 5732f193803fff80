r"""Translation with a trained MT-LSTM (configs/cove/translate.py) and its BLEU.

  python -m tlx.translate --workdir=runs/cove [--split=test] [--beam=5 --alpha=0.6] \
      [--checkpoint=latest|STEP] [--batch=128]

Decodes every source sentence of the Multi30k split (test = test_2016_flickr) with beam search
(--beam=1: greedy) and scores the hypotheses with sacrebleu's corpus BLEU against the split's
references. Both sides are in the task's target tokenization (lower-cased German words and
punctuation, data_pipelines.translation.target_tokenize), so this is tokenized, lower-cased
BLEU (sacrebleu tokenize='none'); target words outside the vocabulary decode as `<unk>`.
Writes WORKDIR/bleu_SPLIT.json (score, settings, sacrebleu signature) and
WORKDIR/translations_SPLIT.txt (one hypothesis per line).
"""

import json
import os
import time

import jax
import numpy as np

from data_pipelines import translation, vocabularies
from tlx import checkpoint, evaluate, input_pipeline, train
from tlx.errors import ConfigError, cli_boundary
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


def translate_run(
    workdir: str,
    split: str = "test",
    beam: int = 5,
    alpha: float = 0.6,
    checkpoint_name: str = "latest",
    batch: int = 128,
    limit: int = 0,
) -> dict:
    """Decodes `split` (its first `limit` sentences if > 0), scores BLEU, writes the files."""
    import sacrebleu

    if split not in translation.SPLITS:
        raise ConfigError(f"--split={split!r}: expected one of {list(translation.SPLITS)}")
    for flag, value in (("--beam", beam), ("--batch", batch)):
        if value <= 0:
            raise ConfigError(f"{flag}={value}: must be positive")
    if not alpha >= 0:
        raise ConfigError(f"--alpha={alpha}: must be >= 0")
    if limit < 0:
        raise ConfigError(f"limit={limit}: must be >= 0 (0: every sentence)")
    cfg = evaluate._load_run_config(workdir, None)
    if cfg.model.name != "cove_mt":
        raise ConfigError(f"{workdir} holds a {cfg.model.name!r} run; tlx.translate needs cove_mt")
    cfg.data.task_name = train.resolve_task(cfg)
    setup = train.build(cfg, input_pipeline.example_batch(cfg, cfg.train.batch_size))
    step = checkpoint.parse_choice(checkpoint_name, ("latest",))
    step, params = checkpoint.restore_params(
        os.path.join(workdir, "checkpoints"),
        setup.abstract_state.params,
        setup.state_shardings.params,
        step,
    )
    options = translation.TranslationOptions(**cfg.data.options)
    en, de = translation.read_split(split)
    if limit:
        en, de = en[:limit], de[:limit]
    src = vocabularies.encode_batch(vocabularies.get_vocabulary(cfg.data.vocab), en)
    seq_len = max(len(s) for s in src)  # every source word, even past the training length
    max_len = cfg.data.seq_len + 16  # test sentences may outgrow the training length
    start = time.time()
    hyp_ids = decode(setup.model, params, src, seq_len, beam=beam, alpha=alpha, batch=batch,
                     max_len=max_len)  # fmt: skip
    seconds = time.time() - start
    tokens = translation.target_vocabulary(options).tokens
    hyps = [" ".join("<unk>" if i == translation.UNK else tokens[i] for i in h) for h in hyp_ids]
    refs = [" ".join(translation.target_tokenize(s)) for s in de]
    bleu = sacrebleu.metrics.BLEU(tokenize="none")
    score = bleu.corpus_score(hyps, [refs])
    result = {
        "split": split,
        "file": translation.SPLITS[split],
        "bleu": score.score,
        "precisions": score.precisions,
        "brevity_penalty": score.bp,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": str(bleu.get_signature()),
        "beam": beam,
        "alpha": alpha,
        "checkpoint_step": step,
        "sentences": len(hyps),
        "decode_seconds": seconds,
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, f"bleu_{split}.json"), "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(workdir, f"translations_{split}.txt"), "w") as f:
            f.writelines(h + "\n" for h in hyps)
    return result


@cli_boundary
def main(argv) -> None:
    del argv
    from absl import flags

    train.quiet_logs()
    f = flags.FLAGS
    r = translate_run(f.workdir, f.split, f.beam, f.alpha, f.checkpoint, f.batch)
    print(
        f"BLEU {r['bleu']:.2f} on {r['file']} ({r['sentences']} sentences, beam {r['beam']}, "
        f"step {r['checkpoint_step']}, {r['decode_seconds']:.0f} s) {r['signature']}",
        flush=True,
    )


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "A configs/cove/translate.py run directory.")
    flags.DEFINE_string("split", "test", f"Multi30k split, one of {list(translation.SPLITS)}.")
    flags.DEFINE_integer("beam", 5, "Beam size; 1 is greedy decoding.")
    flags.DEFINE_float("alpha", 0.6, "GNMT length-penalty exponent.")
    flags.DEFINE_string("checkpoint", "latest", "latest, or a step.")
    flags.DEFINE_integer("batch", 128, "Sentences decoded at once.")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
