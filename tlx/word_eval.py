r"""Scores a word-vector set on WordSim-353, SimLex-999 and the Google analogies
(tlx.word_benchmarks, which says how each is defined, as gensim does).

  python -m tlx.word_eval --vectors=glove6b|FILE|DIR [--out=FILE.json] [--restrict=30000]
"""

import json
import math
import pathlib

from tlx.errors import ConfigError, cli_boundary
from tlx.word_benchmarks import evaluate


@cli_boundary
def main(argv) -> None:
    del argv
    from absl import flags

    from tlx import wordvec

    f = flags.FLAGS
    if f.restrict <= 0:
        raise ConfigError(f"--restrict={f.restrict}: must be positive")
    vectors = wordvec.load_source(f.vectors)
    metrics = evaluate(vectors, f.data_dir, f.restrict)
    print(f"{f.vectors}: {vectors}", flush=True)
    for key, value in metrics.items():
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")
    if f.out:
        # JSON has no NaN; an accuracy over zero covered questions is written as null.
        clean = {
            k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()
        }
        pathlib.Path(f.out).parent.mkdir(parents=True, exist_ok=True)
        with open(f.out, "w") as fh:
            json.dump({"vectors": f.vectors, "metrics": clean}, fh, indent=2)


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string(
        "vectors", None, "glove6b, a word-vector file, or a folder with vectors.txt/.bin."
    )
    flags.DEFINE_string("out", None, "Also write the metrics to this JSON file.")
    flags.DEFINE_string("data_dir", None, "tlx data root (default $TLX_DATA_DIR).")
    flags.DEFINE_integer("restrict", 30000, "Analogies use the this many most frequent words.")
    flags.mark_flags_as_required(["vectors"])
    app.run(main)


if __name__ == "__main__":
    run()
