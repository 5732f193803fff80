r"""Translation with a trained MT-LSTM (configs/cove/translate.py) and its BLEU.

  python -m tlx.translate --workdir=runs/cove [--split=test] [--beam=5 --alpha=0.6] \
      [--checkpoint=latest|STEP] [--batch=128]

Decodes every source sentence of the Multi30k split (test = test_2016_flickr) with beam search
(--beam=1: greedy) and scores the hypotheses with corpus BLEU (tlx.evaluators.bleu, which the
training loop can also run: `c.evals.bleu = dict(type="bleu", ...)`).
Writes WORKDIR/bleu_SPLIT.json (score, settings, sacrebleu signature) and
WORKDIR/translations_SPLIT.txt (one hypothesis per line).
"""

import json
import os

import jax

from data_pipelines import translation
from tlx import checkpoint, input_pipeline, steps
from tlx.errors import ConfigError, cli_boundary
from tlx.evaluators import bleu
from tlx.metrics import quiet_logs


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
    if split not in translation.SPLITS:
        raise ConfigError(f"--split={split!r}: expected one of {list(translation.SPLITS)}")
    for flag, value in (("--beam", beam), ("--batch", batch)):
        if value <= 0:
            raise ConfigError(f"{flag}={value}: must be positive")
    if not alpha >= 0:
        raise ConfigError(f"--alpha={alpha}: must be >= 0")
    if limit < 0:
        raise ConfigError(f"limit={limit}: must be >= 0 (0: every sentence)")
    cfg = steps.load_run_config(workdir)
    if cfg.model.name != "cove_mt":
        raise ConfigError(f"{workdir} holds a {cfg.model.name!r} run; tlx.translate needs cove_mt")
    cfg.data.task_name = steps.resolve_task(cfg)
    setup = steps.build(cfg, input_pipeline.example_batch(cfg, cfg.train.batch_size))
    step = checkpoint.parse_choice(checkpoint_name, ("latest",))
    step, params = steps.restore_params(setup, cfg, checkpoint.run_checkpoints(cfg, workdir), step)
    score, hyps = bleu.translate(setup.model, params, cfg, split, beam=beam, alpha=alpha,
                                 batch=batch, limit=limit)  # fmt: skip
    result = {
        "split": split,
        "file": translation.SPLITS[split],
        **score,
        "beam": beam,
        "alpha": alpha,
        "checkpoint_step": step,
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

    quiet_logs()
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
