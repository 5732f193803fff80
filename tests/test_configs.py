"""Every config under configs/, found by glob (a new config cannot rot unseen): its `runlocal`
variant builds, carries the sections tlx.train reads, builds its model, and the cheap ones
take two steps through the real training loop."""

import ast
import importlib
import json
import math
import pathlib
import sys

import jax
import pytest

from tlx import evaluators, input_pipeline, models, steps, train

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
_cfg = sys.modules["tlx_tests_conftest"].config_with  # tests/conftest.py


def _defines_get_config(path: pathlib.Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body)


def _discover() -> list[str]:
    """'bert/pretrain', ... : every configs/**/*.py defining get_config (not common.py)."""
    names = []
    for path in sorted(CONFIGS.glob("**/*.py")):
        if path.name == "__init__.py" or path == CONFIGS / "common.py":
            continue
        if _defines_get_config(path):
            names.append(path.relative_to(CONFIGS).with_suffix("").as_posix())
    return names


FOUND = _discover()

# Arguments besides "runlocal" that a config needs to build here; a config not named here is
# built with plain "runlocal". {elmo_run} is a pretrained elmo_lm run directory.
EXTRA_ARGS = {
    # features=glove+cove (the default) reads init=runs/cove; glove: frozen GloVe 6B alone, the
    # variant without a pretrained run.
    "cove/finetune": "features=glove",
    # No from-scratch variant: get_config reads the biLM's shape from init=DIR/config.json.
    "elmo/finetune": "init={elmo_run}",
}

# The configs that also take two steps through tlx.train.train_and_evaluate: those whose
# two-step runlocal run took under ~20 s here (a shared 2-core CPU, 8 host devices, a fresh
# TLX_CACHE_DIR as in a test session); seconds from three quiet runs, the last this file alone
# in this order. Cheapest first, so the session's one-off warm-up (first XLA compiles, ~9 s)
# lands on the cheapest. A new config gets the tests above until it is measured and added here.
TWO_STEP = {
    "embeddings/word2vec": "2.3, 3.6, 3.1",
    "embeddings/glove": "3.7, 2.4, 2.8",
    "embeddings/classify": "13.5, 14.8, 14.0",  # GloVe 6B 50d frozen (the first load of GloVe 6B)
    "cove/finetune": "19.7, 16.3, 20.6",  # features=glove (EXTRA_ARGS)
}
# Not in the set (seconds for the same two steps); each config's training runs elsewhere:
#   gpt/finetune     19.4 with sp8000 already cached, 25.6 when it trains the SentencePiece
#                    vocabulary itself, as it would here (tests/test_gpt_train.py)
#   bert/finetune    21.6 (30.4 as the session's first run)     (tests/test_finetune.py)
#   gpt/pretrain     20.9 with sp8000 cached, 27.6 training it  (tests/test_gpt_train.py)
#   elmo/pretrain    21.7, 24.3                                 (tests/test_recurrent_train.py)
#   cove/translate   21.9, 25.4                                 (tests/test_recurrent_train.py)
#   bert/pretrain    34.4, 28.1 (size mini, runlocal's default) (tests/test_train.py)
#   elmo/finetune    needs a pretrained elmo_lm run: 12.4 for a two-step elmo/pretrain run as
#                    init, then 20.9 for its own two steps      (tests/test_recurrent_train.py)

# Each key set where the config has it (configs/common.py runlocal and the configs' own).
TWO_STEP_OVERRIDES = {
    "train.steps": 2,
    "train.epochs": 0.0,
    "train.eval_every": 2,
    "train.log_every": 2,
    "train.eval_steps": 1,
    "checkpoint.every": 2,
}

# The ConfigDict paths tlx.train reads, each present in every config.
SECTIONS = (
    "model.name",
    "data.task",
    "train.steps",
    "train.batch_size",
    "optim",
    "objective.name",
    "checkpoint",
    "transfer",
)
# Model keys tlx.train fills from the data when None (the vocabularies' sizes).
FILLED_BY_LOOP = ("vocab_size", "tgt_vocab_size", "num_classes")  # data_pipelines.task_dimensions


def _module(name: str):
    return importlib.import_module("configs." + name.replace("/", "."))


def _arg(name: str, **dirs) -> str:
    extra = EXTRA_ARGS.get(name, "").format(**dirs)
    return ",".join(filter(None, (extra, "runlocal")))


def _config(name: str, **dirs):
    """configs/NAME.py's runlocal variant, unlocked; a failure names the file."""
    arg = _arg(name, **dirs)
    try:
        return _cfg(_module(name), arg)
    except Exception as e:
        raise AssertionError(f"configs/{name}.py: get_config({arg!r}) failed: {e!r}") from e


def _has(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


@pytest.fixture(scope="module")
def stub_runs(tmp_path_factory) -> dict[str, str]:
    """Run directories holding only the config.json a transferring get_config reads."""
    elmo = tmp_path_factory.mktemp("elmo_stub")
    model = {"name": "elmo_lm", "size": "tiny", "vocab_size": 100}
    (elmo / "config.json").write_text(json.dumps({"model": model}))
    return {"elmo_run": str(elmo)}


def test_glob_finds_the_configs_and_the_tables_name_real_ones():
    assert FOUND and "bert/pretrain" in FOUND, FOUND
    assert set(EXTRA_ARGS) <= set(FOUND), set(EXTRA_ARGS) - set(FOUND)
    assert set(TWO_STEP) <= set(FOUND), set(TWO_STEP) - set(FOUND)


@pytest.mark.parametrize("name", FOUND)
def test_runlocal_config_has_the_sections_the_loop_reads(name, stub_runs):
    cfg = _config(name, **stub_runs)
    missing = [key for key in SECTIONS if not _has(cfg, key)]
    assert not missing, f"configs/{name}.py lacks {missing}"
    assert cfg.model.name in models.MODELS, f"configs/{name}.py: model.name={cfg.model.name!r}"
    assert cfg.data.task and cfg.objective.name, f"configs/{name}.py: empty data.task/objective"
    assert cfg.train.steps > 0 and cfg.train.batch_size > 0, f"configs/{name}.py: runlocal"
    assert cfg.checkpoint.every > 0 and "init_from" in cfg.transfer, f"configs/{name}.py"


@pytest.mark.parametrize("name", FOUND)
def test_runlocal_model_builds(name, stub_runs):
    """The sizes the loop takes from the task filled in as it fills them, the model builds and
    initialises (abstractly) on the task's batch; its evaluators and best metric exist."""
    cfg = _config(name, **stub_runs)
    cfg.data.task_name = steps.resolve_task(cfg)
    steps.fill_model_dims(cfg)
    unset = [k for k in FILLED_BY_LOOP if k in cfg.model and cfg.model[k] is None]
    assert not unset, f"configs/{name}.py: model.{unset} still None"
    batch = input_pipeline.example_batch(cfg, cfg.train.batch_size)
    try:
        model = models.build(cfg.model)
        jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
    except Exception as e:
        raise AssertionError(f"configs/{name}.py: models.build({cfg.model.name}) failed") from e
    specs = evaluators.specs(cfg)
    assert "eval" in specs, f"configs/{name}.py: no evaluator named eval: {sorted(specs)}"
    if cfg.best_metric:
        assert cfg.best_metric.split("/")[0] in specs, f"configs/{name}.py: {cfg.best_metric}"


@pytest.mark.parametrize("name", list(TWO_STEP))
def test_runlocal_takes_two_steps(name, tmp_path):
    cfg = _config(name)
    for key, value in TWO_STEP_OVERRIDES.items():
        if _has(cfg, key):
            section, leaf = key.split(".")
            cfg[section][leaf] = value
    final = train.train_and_evaluate(cfg, str(tmp_path))
    evals = {k: v for k, v in final.items() if k.startswith("eval/")}
    assert evals, f"configs/{name}.py: no final eval metrics: {final}"
    assert all(math.isfinite(float(v)) for v in final.values()), f"configs/{name}.py: {final}"
    assert (tmp_path / "checkpoints" / "2").is_dir(), sorted(
        p.name for p in (tmp_path / "checkpoints").iterdir()
    )
