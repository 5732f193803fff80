"""Configured evaluations (in the spirit of big_vision's `evaluators/`).

A config lists what to evaluate and picks the metric that keeps the best checkpoint:

  c.evals = {"eval": {"type": "downstream"}}      # name -> type + options
  c.best_metric, c.best_mode = "eval/accuracy", "max"

Each evaluator jits its own function from the run's model and objective (`Setup.jit_eval`) and
returns flat metrics from `run(params)`; the loop logs them under `NAME/` and knows nothing
else about them. Options every type takes: `split` (default data.eval_split), `task` (default
the run's), `steps` (default train.eval_steps; -1 the whole split), `when` ("eval": every
train.eval_every steps and at the end; "end": once, after the last step).

Types (one file each): objective (loss and metrics of the training objective), downstream
(predictions scored by the task's metric_fn), mixture (downstream per member + `average`),
word_vectors (WordSim-353, SimLex-999, analogies), export_word_vectors (writes
WORKDIR/vectors.txt + words.txt) and bleu (a seq2seq model's translations, sacrebleu). A new
kind of evaluation is one file and one TYPES entry.
"""

import ml_collections

from tlx.evaluators import base, bleu, downstream, mixture, objective, word_vectors

TYPES: dict[str, type[base.Evaluator]] = {
    "objective": objective.Objective,
    "downstream": downstream.Downstream,
    "mixture": mixture.Mixture,
    "word_vectors": word_vectors.Intrinsic,
    "export_word_vectors": word_vectors.Export,
    "bleu": bleu.Bleu,
}
MODES = ("max", "min")


def specs(cfg: ml_collections.ConfigDict) -> dict[str, dict]:
    """{name: options} of the run's evaluations; a config.json from before `c.evals` gets the
    evaluations tlx ran for it then (legacy_specs)."""
    evals = cfg.get("evals")
    if evals is None:
        return legacy_specs(cfg)
    out = {}
    for name, spec in evals.items():
        spec = dict(spec)
        if spec.get("type") not in TYPES:
            raise base.ConfigError(
                f"evals.{name}.type={spec.get('type')!r}: expected one of {sorted(TYPES)}"
            )
        if spec.get("when", "eval") not in base.WHEN:
            raise base.ConfigError(
                f"evals.{name}.when={spec['when']!r}: expected one of {base.WHEN}"
            )
        out[name] = spec
    return out


def legacy_specs(cfg: ml_collections.ConfigDict) -> dict[str, dict]:
    """What a run saved before configured evaluators was scored with: word vectors for the
    word2vec / GloVe objectives, the task's metric_fn for downstream tasks and mixtures, else
    the objective's metrics."""
    import data_pipelines

    name = cfg.objective if isinstance(cfg.objective, str) else cfg.objective.name
    if name in ("sgns", "glove"):
        return {
            "eval": {"type": "word_vectors"},
            "vectors": {"type": "export_word_vectors", "when": "end"},
        }
    if cfg.data.task == data_pipelines.tasks.MIXTURE:
        return {"eval": {"type": "mixture"}}
    if cfg.data.task in data_pipelines.downstream_tasks(network=True):
        return {"eval": {"type": "downstream"}}
    return {"eval": {"type": "objective"}}


def best(cfg: ml_collections.ConfigDict) -> tuple[str, str]:
    """(metric, mode) that picks the best checkpoint: c.best_metric / c.best_mode; a config.json
    from before them: the downstream task's primary metric (max), else none ("", "max")."""
    if "best_metric" in cfg:
        mode = cfg.get("best_mode", "max")
        if mode not in MODES:
            raise base.ConfigError(f"best_mode={mode!r}: expected one of {MODES}")
        return cfg.best_metric, mode
    import data_pipelines

    if cfg.data.task == data_pipelines.tasks.MIXTURE:
        return "eval/average", "max"
    if cfg.data.task in data_pipelines.downstream_tasks(network=True):
        return f"eval/{data_pipelines.downstream_info(cfg.data.task).primary_metric}", "max"
    return "", "max"


def build(setup, cfg, workdir: str, **overrides) -> dict[str, base.Evaluator]:
    """The run's evaluators by name, each with its options (and `overrides`, e.g. a split)."""
    out = {}
    for name, spec in specs(cfg).items():
        kind = spec.pop("type")
        out[name] = TYPES[kind](name, setup, cfg, workdir=workdir, **{**spec, **overrides})
    return out


def splits_read(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The task splits the run's evaluators read (checked before training starts, as are the
    evaluator types and that c.best_metric names one of them)."""
    names = specs(cfg)
    metric, _ = best(cfg)
    if metric and metric.partition("/")[0] not in names:
        raise base.ConfigError(
            f"best_metric={metric!r} names no evaluator of the run (evals: {sorted(names)}); "
            "set it to EVAL/METRIC, or '' to keep no best checkpoint"
        )
    out = []
    for spec in specs(cfg).values():
        out.extend(TYPES[spec["type"]].splits(cfg, spec))
    return tuple(dict.fromkeys(out))
