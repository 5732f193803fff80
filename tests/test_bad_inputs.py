"""The bad-input catalogue: each case gets exit status 2 from the CLI boundary (tlx.errors), a
message naming the culprit (key, file, step, flag), and leaves every file on disk as it was.
The fault tests (a damaged latest checkpoint is set aside and the run resumes from the previous
step, ending bit-identical to an uninterrupted run) are in test_checkpoint_faults.py.

The cases call what each CLI's main calls, through `tlx.errors.cli_boundary` as the CLIs do
(in process: a subprocess per case would cost a JAX start-up each); `test_cli_exit_status`
checks the wiring of the real command lines once per CLI family."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs.bert import finetune, pretrain
from configs.cove import translate as cove_translate
from configs.elmo import pretrain as elmo_pretrain
from configs.embeddings import glove, word2vec
from configs.gpt import pretrain as gpt_pretrain
from tlx import (
    convert,
    errors,
    evaluate,
    generate,
    input_pipeline,
    steps,
    train,
    translate,
)
from tlx.data import __main__ as data_cli

REPO = pathlib.Path(__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------------------


_cfg = sys.modules["tlx_tests_conftest"].config_with  # tests/conftest.py
_ckpt_run = sys.modules["tlx_tests_conftest"]._load_module(
    "tlx_tests_checkpointed_run", "checkpointed_run.py"
)  # tests/checkpointed_run.py
RUN, run, _copy_run = _ckpt_run.RUN, _ckpt_run.run, _ckpt_run.copy_run  # run: a fixture
_snapshot, _damage = _ckpt_run.snapshot, _ckpt_run.damage


def _fails(capsys, fn, *args, culprit, roots=(), **kwargs) -> str:
    """Runs fn through the CLI boundary: exit status 2, `culprit` (each of them) in the
    message, no traceback printed, and nothing under `roots` changed. Returns the message."""
    before = _snapshot(*roots)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        errors.cli_boundary(fn)(*args, **kwargs)
    message = capsys.readouterr().err
    assert exit_info.value.code == errors.EXIT_BAD_INPUT, message
    lines = message.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert all(line.startswith("warning: ") for line in lines[:first]), message
    assert "Traceback" not in message
    for part in (culprit,) if isinstance(culprit, str) else culprit:
        assert part in message, f"{part!r} not in {message!r}"
    assert _snapshot(*roots) == before, "a failing command changed files on disk"
    if os.environ.get("TLX_CATALOGUE_LOG"):  # the list of messages for a report
        with open(os.environ["TLX_CATALOGUE_LOG"], "a") as f:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
            f.write(json.dumps({"test": test, "message": message}) + "\n")
    return message


# --- 1. config values, every paradigm's configs -------------------------------------------------

BERT = (pretrain, "size=tiny,runlocal")
VALUE_CASES = [
    (BERT, {"train.batch_size": 0}, "train.batch_size=0"),
    (BERT, {"train.batch_size": -8}, "train.batch_size=-8"),
    (BERT, {"train.steps": 0}, "train.steps=0"),
    (BERT, {"checkpoint.every": 0}, "checkpoint.every=0"),
    (BERT, {"train.log_every": -1}, "train.log_every=-1"),
    (BERT, {"train.eval_steps": 0}, "train.eval_steps=0"),
    (BERT, {"train.eval_every": 0}, "train.eval_every=0"),
    (BERT, {"train.epochs": -1.0}, "train.epochs=-1.0"),
    (BERT, {"train.batch_size": 12}, ("train.batch_size=12", "8 data-parallel devices")),
    (BERT, {"mesh.data": 3}, "mesh {'data': 3"),
    (BERT, {"optim.lr": -1e-3}, "optim.lr=-0.001"),
    (BERT, {"optim.b2": 1.0}, "optim.b2=1.0"),
    (BERT, {"optim.warmup_fraction": 1.5}, "optim.warmup_fraction=1.5"),
    (BERT, {"model.dropout_rate": 1.5}, "model.dropout_rate=1.5"),
    (BERT, {"checkpoint.max_to_keep": 0}, "checkpoint.max_to_keep=0"),
    (BERT, {"model.vocab_size": 1000}, ("model.vocab_size=1000", "30522")),
    ((finetune, "task=sst2,size=tiny,runlocal"), {"train.batch_size": 0}, "train.batch_size=0"),
    (
        (gpt_pretrain, "size=tiny,runlocal"),
        {"model.attention_dropout_rate": -0.1},
        "model.attention_dropout_rate=-0.1",
    ),  # fmt: skip
    ((word2vec, "runlocal"), {"data.options.negatives": 0}, "data.options.negatives=0"),
    ((word2vec, "runlocal"), {"data.options.window": -2}, "data.options.window=-2"),
    ((word2vec, "runlocal"), {"data.options.sample": 2.0}, "data.options.sample=2.0"),
    ((glove, "runlocal"), {"data.options.x_max": 0.0}, "data.options.x_max=0.0"),
    ((elmo_pretrain, "runlocal"), {"checkpoint.every": -5}, "checkpoint.every=-5"),
    ((cove_translate, "runlocal"), {"train.batch_size": 6}, ("train.batch_size=6", "devices")),
    (BERT, {"best_metric": "dev/loss"}, ("best_metric='dev/loss'", "['eval']")),
    (BERT, {"evals.eval.type": "perplexity"}, ("evals.eval.type='perplexity'", "objective")),
    (BERT, {"evals.eval.when": "never"}, "evals.eval.when='never'"),
    (BERT, {"best_mode": "lowest"}, "best_mode='lowest'"),
]


@pytest.mark.parametrize(
    "config,overrides,culprit", VALUE_CASES, ids=[str(c[1]) for c in VALUE_CASES]
)
def test_config_value_is_rejected_naming_the_key(capsys, tmp_path, config, overrides, culprit):
    cfg = _cfg(config[0], config[1], **overrides)
    workdir = tmp_path / "w"
    _fails(capsys, train.train_and_evaluate, cfg, str(workdir), culprit=culprit, roots=[tmp_path])
    assert not (workdir / "config.json").exists()


def test_a_url_workdir_is_refused_naming_the_checkpoint_key(capsys, tmp_path):
    cfg = _cfg(*BERT)
    _fails(capsys, train.train_and_evaluate, cfg, "gs://bucket/run",
           culprit=("--workdir=gs://bucket/run", "checkpoint.directory=gs://bucket/run/checkpoints"),
           roots=[tmp_path])  # fmt: skip


# --- 2. a rerun never damages a run -------------------------------------------------------------

RESUME_CASES = [
    ({"optim.lr": 1e-2}, ["optim.lr: 0.0005 -> 0.01"]),
    ({"train.batch_size": 16}, ["train.batch_size: 8 -> 16"]),
    ({"seed": 3, "model.dropout_rate": 0.2}, ["seed: 0 -> 3", "model.dropout_rate: 0.1 -> 0.2"]),
    ({"data.seq_len": 32}, ["data.seq_len: 64 -> 32"]),
]


@pytest.mark.parametrize("overrides,lines", RESUME_CASES, ids=[str(c[0]) for c in RESUME_CASES])
def test_resume_with_a_changed_config_lists_each_change(capsys, run, overrides, lines):
    cfg = _cfg(pretrain, "size=tiny,runlocal", **{**RUN, **overrides})
    message = _fails(capsys, train.train_and_evaluate, cfg, str(run), culprit=lines, roots=[run])
    assert "--config.checkpoint.allow_changes" in message


def test_resume_with_an_unreadable_saved_config_keeps_the_run(capsys, run, tmp_path):
    workdir = _copy_run(run, tmp_path)
    (workdir / "config.json").write_text('{"seed": 0, "trunc')
    cfg = _cfg(pretrain, "size=tiny,runlocal", **RUN)
    _fails(capsys, train.train_and_evaluate, cfg, str(workdir),
           culprit=(str(workdir / "config.json"), "not valid JSON"), roots=[workdir])  # fmt: skip


def test_init_from_that_is_not_a_run(capsys, tmp_path):
    cfg = _cfg(finetune, "task=sst2,size=tiny,runlocal",
               **{"transfer.init_from": str(tmp_path / "nowhere")})  # fmt: skip
    _fails(capsys, train.train_and_evaluate, cfg, str(tmp_path / "w"),
           culprit=str(tmp_path / "nowhere"))  # fmt: skip
    (tmp_path / "empty").mkdir()
    cfg.transfer.init_from = str(tmp_path / "empty")
    _fails(capsys, train.train_and_evaluate, cfg, str(tmp_path / "w"),
           culprit=("no Orbax checkpoint", str(tmp_path / "empty")))  # fmt: skip


def test_resumed_batches_continue_the_example_stream_under_another_batch_size():
    cfg = _cfg(pretrain, "size=tiny,runlocal")
    cfg.data.task_name = steps.resolve_task(cfg)
    first = input_pipeline.train_batches(cfg, 8, 0)
    ids = np.concatenate([next(first)["input_ids"] for _ in range(2)])  # examples 0..15
    resumed = input_pipeline.train_batches(cfg, 4, 8)  # batch 4 from example 8
    np.testing.assert_array_equal(next(resumed)["input_ids"], ids[8:12])
    np.testing.assert_array_equal(next(resumed)["input_ids"], ids[12:16])


# --- 3. evaluate / generate / translate / convert / data / word_eval ----------------------------


def test_evaluate_bad_inputs(capsys, run, tmp_path):
    _fails(capsys, evaluate.evaluate_run, str(tmp_path), culprit=str(tmp_path / "config.json"))
    _fails(capsys, evaluate.evaluate_run, str(run), checkpoint_name="newest",
           culprit="--checkpoint='newest'", roots=[run])  # fmt: skip
    _fails(capsys, evaluate.evaluate_run, str(run), checkpoint_name="999",
           culprit=("at step 999", "steps there: [1, 2, 3, 4, 5, 6]"), roots=[run])  # fmt: skip
    _fails(capsys, evaluate.evaluate_run, str(run), "not_a_task",
           culprit="--task=not_a_task", roots=[run])  # fmt: skip
    bad = tmp_path / "bad_json"
    bad.mkdir()
    (bad / "config.json").write_text("{")
    _fails(capsys, evaluate.evaluate_run, str(bad), culprit=str(bad / "config.json"), roots=[bad])


def test_evaluate_an_explicitly_requested_damaged_step(capsys, run, tmp_path):
    workdir = _copy_run(run, tmp_path)
    _damage(workdir / "checkpoints" / "6", "bitflip")
    _fails(capsys, evaluate.evaluate_run, str(workdir), checkpoint_name="6",
           culprit=(str(workdir / "checkpoints" / "6"), "digest"), roots=[workdir])  # fmt: skip


def _gpt_run_dir(tmp_path, **model) -> pathlib.Path:
    workdir = tmp_path / "gpt"
    workdir.mkdir()
    config = {"model": {"name": "gpt_lm", "vocab_size": 100, "max_position": 64, **model},
              "data": {"task": "causal_lm", "vocab": "bert_uncased"}}  # fmt: skip
    (workdir / "config.json").write_text(json.dumps(config))
    return workdir


@pytest.mark.parametrize(
    "flags,culprit",
    [
        ({"temperature": -0.5}, "--temperature=-0.5"),
        ({"top_k": 101}, ("--top_k=101", "[0, 100]")),
        ({"top_k": -1}, "--top_k=-1"),
        ({"max_new_tokens": 0}, "--max_new_tokens=0"),
        ({"max_new_tokens": 70}, ("--max_new_tokens=70", "64 positions")),
        ({"checkpoint_name": "best-ish"}, "--checkpoint='best-ish'"),
    ],
)
def test_generate_bad_flags(capsys, tmp_path, flags, culprit):
    workdir = _gpt_run_dir(tmp_path)
    _fails(capsys, generate.generate_run, str(workdir), "the", culprit=culprit, roots=[workdir],
           **flags)  # fmt: skip


def test_generate_needs_a_gpt_run(capsys, run):
    _fails(capsys, generate.generate_run, str(run), "the", culprit=("bert_pretrain", "gpt_lm"),
           roots=[run])  # fmt: skip


@pytest.mark.parametrize(
    "kwargs,culprit",
    [
        ({"beam": 0}, "--beam=0"),
        ({"batch": -1}, "--batch=-1"),
        ({"split": "test_2099"}, "--split='test_2099'"),
        ({"alpha": -1.0}, "--alpha=-1.0"),
    ],
)
def test_translate_bad_flags(capsys, run, kwargs, culprit):
    _fails(capsys, translate.translate_run, str(run), culprit=culprit, roots=[run], **kwargs)


def test_translate_needs_a_cove_run(capsys, run):
    _fails(capsys, translate.translate_run, str(run), culprit=("bert_pretrain", "cove_mt"),
           roots=[run])  # fmt: skip


def test_convert_bad_inputs(capsys, run, tmp_path):
    nowhere = tmp_path / "nowhere"
    _fails(capsys, lambda: convert.main(["export-hf", "--model=bert", f"--src={nowhere}",
                                         f"--dst={tmp_path / 'hf'}"]),
           culprit=str(nowhere))  # fmt: skip
    hf = tmp_path / "hf_src"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    _fails(capsys, lambda: convert.main(["import-hf", "--model=bert", f"--src={hf}",
                                         f"--dst={tmp_path / 'out'}"]),
           culprit="model.safetensors", roots=[hf])  # fmt: skip
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    _fails(capsys, lambda: convert.main(["export-hf", "--model=bert", f"--src={run}",
                                         f"--dst={dst}"]),
           culprit=(str(dst), "--overwrite"), roots=[dst, run])  # fmt: skip
    workdir = _copy_run(run, tmp_path)
    for step in range(1, 7):
        _damage(workdir / "checkpoints" / str(step), "bitflip")
    _fails(capsys, lambda: convert.main(["export-hf", "--model=bert", f"--src={workdir}",
                                         f"--dst={tmp_path / 'hf2'}"]),
           culprit=("every checkpoint", "damaged"), roots=[workdir])  # fmt: skip
    assert not (tmp_path / "hf2").exists()


def test_interrupted_conversion_leaves_no_temporary_directory(run, tmp_path):
    dst = tmp_path / "hf"
    stale = tmp_path / f".hf.tmp-{2**22 + 12345}-abc"  # a pid that is not running
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    convert.export_hf("bert", str(run), str(dst))
    assert not stale.exists() and (dst / "model.safetensors").exists()
    # Killed while swapping in a replacement (--overwrite): the old export is put back first.
    old = tmp_path / f".hf.tmp-{2**22 + 12346}-xyz.old"
    os.rename(dst, old)
    convert.export_hf("bert", str(run), str(dst), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_data_cli_bad_inputs(capsys, tmp_path):
    assert data_cli.main(["fetch", "no_such_dataset", f"--dir={tmp_path}"]) == 2
    assert "no_such_dataset" in capsys.readouterr().err
    for flag in ("--retries=-1", "--timeout=0"):
        with pytest.raises(SystemExit) as e:
            data_cli.main(["fetch", "sst2", f"--dir={tmp_path}", flag])
        assert e.value.code == 2 and flag.split("=")[0] in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_interrupted_fetch_leaves_no_temporary_file(tmp_path):
    from tlx.data import fetch

    stale = tmp_path / "classification" / f".dev.txt.tmp-{2**22 + 7}"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    keep = tmp_path / ".downloads" / "x.part"
    keep.parent.mkdir()
    keep.write_bytes(b"resumable")
    fetch.remove_stale_temporaries(tmp_path)
    assert not stale.exists() and keep.exists()


def test_cli_exit_status(tmp_path):
    """The real command lines: status 2 and one `error:` line, no traceback."""
    workdir = _gpt_run_dir(tmp_path)
    cases = [
        (["tlx.generate", f"--workdir={workdir}", "--temperature=-1"], "--temperature=-1.0"),
        (
            [
                "tlx.train",
                "--config=configs/bert/pretrain.py:size=tiny,runlocal",
                f"--workdir={tmp_path / 'w'}",
                "--config.train.batch_size=0",
            ],
            "train.batch_size=0",
        ),  # fmt: skip
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    for cmd, culprit in cases:
        proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"error: {culprit}" in proc.stderr or culprit in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()
