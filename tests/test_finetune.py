"""The finetuning workflow: every task kind trains and scores, the recipe's epochs, the best-dev
checkpoint, `tlx.evaluate`, and the generic heads."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.bert import finetune
from tlx import evaluate, heads, models, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cfg(arg, **overrides):
    return sys.modules["tlx_tests_conftest"].config_with(finetune, arg, **overrides)


def _rows(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "task,metrics",
    [
        ("mrpc", ("accuracy", "f1", "accuracy_and_f1")),
        ("conll2003_ner", ("precision", "recall", "f1", "token_accuracy")),
        ("ud_ewt_upos", ("accuracy",)),
    ],
)
def test_each_task_kind_trains_and_reports_its_metrics(task, metrics, tmp_path):
    cfg = _cfg(f"task={task},size=tiny,runlocal")
    final = train.train_and_evaluate(cfg, str(tmp_path))
    for m in metrics:
        assert 0.0 <= final[f"eval/{m}"] <= 1.0, (m, final)
    assert np.isfinite(final["eval/loss"])
    train_rows = [r for r in _rows(tmp_path) if "loss" in r]
    expected = "token_accuracy" if task != "mrpc" else "accuracy"
    assert expected in train_rows[-1]


def test_mixture_trains_one_head_per_task_and_scores_each(tmp_path):
    cfg = _cfg("task=glue_mix,size=tiny,runlocal,rates=sst2=1;trec=1;mrpc=1;rte=1")
    final = train.train_and_evaluate(cfg, str(tmp_path))
    primaries = [final["eval/sst2/accuracy"], final["eval/trec/accuracy"],
                 final["eval/mrpc/accuracy_and_f1"], final["eval/rte/accuracy"]]  # fmt: skip
    assert final["eval/average"] == pytest.approx(np.mean(primaries))
    assert final["best/average"] == final["eval/average"]  # one evaluation: it is the best
    params = _params(tmp_path)
    kernels = [params["head"][f"task_{i}"]["dense"]["kernel"].shape[-1] for i in range(4)]
    assert kernels == [2, 6, 2, 2]


def _params(workdir):
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(
        str(pathlib.Path(workdir) / "checkpoints"),
        item_handlers={"params": ocp.StandardCheckpointHandler()},
    )
    step = mngr.latest_step()
    return mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]


def test_best_dev_checkpoint_tracks_the_best_evaluation(tmp_path):
    cfg = _cfg(
        "task=sst2,size=tiny,runlocal",
        **{"train.steps": 8, "train.eval_every": 2, "train.eval_steps": 4, "optim.lr": 3e-3},
    )
    final = train.train_and_evaluate(cfg, str(tmp_path))
    evals = [r for r in _rows(tmp_path) if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    values = [r["eval/accuracy"] for r in evals]
    best = json.loads((tmp_path / "best_metrics.json").read_text())
    assert best["value"] == max(values)
    assert best["step"] == evals[values.index(max(values))]["step"]  # first step reaching it
    assert final["best/step"] == best["step"]
    assert [int(p.name) for p in (tmp_path / "best").iterdir() if p.name.isdigit()] == [
        best["step"]
    ]

    # tlx.evaluate scores the best checkpoint on the same batches to the same numbers.
    result = evaluate.evaluate_run(str(tmp_path), "sst2", "validation", "best", eval_steps=4)
    assert result["step"] == best["step"]
    assert result["metrics"]["accuracy"] == pytest.approx(best["value"])
    assert json.loads((tmp_path / "eval_sst2.json").read_text())["metrics"] == result["metrics"]


def test_epochs_set_the_step_budget_and_per_epoch_evaluation(tmp_path):
    # train.steps <= 0: the steps come from train.epochs (a positive train.steps would win).
    overrides = {"train.steps": 0, "train.epochs": 0.02, "train.eval_every": -1}
    cfg = _cfg("task=rte,size=tiny,runlocal", **overrides)
    train.train_and_evaluate(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["steps"] == round(0.02 * 2490 / 8)  # 2,490 RTE training pairs
    assert saved["train"]["eval_every"] == -(-2490 // 8)  # one epoch


def test_evaluate_cli_writes_json_and_rejects_a_mismatched_task(tmp_path):
    cfg = _cfg("task=trec,size=tiny,runlocal")
    train.train_and_evaluate(cfg, str(tmp_path))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    cmd = [sys.executable, "-m", "tlx.evaluate", f"--workdir={tmp_path}", "--task=trec",
           "--split=test"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "eval_trec.json").read_text())
    assert result["split"] == "test" and result["task"] == "trec"
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    # The whole test split (500 questions) was scored, whatever the run's eval_steps.
    assert result["num_examples"] == 500
    with pytest.raises(ValueError, match="6 classes.*sst2 is a sentence task with 2 labels"):
        evaluate.evaluate_run(str(tmp_path), "sst2")


def test_sentence_head_reads_the_requested_features():
    batch = {
        "input_ids": jnp.ones((2, 8), jnp.int32),
        "input_mask": jnp.ones((2, 8), jnp.int32),
        "segment_ids": jnp.zeros((2, 8), jnp.int32),
    }
    cfg = _cfg("task=sst2,size=mini,mode=feature").model  # the last 4 of BERT-mini's 4 layers
    model = models.build(cfg)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
    assert params["head"]["hidden"]["kernel"].shape == (4 * 256, 256)
    assert params["head"]["dense"]["kernel"].shape == (256, 2)


def test_feature_mode_stops_encoder_gradients():
    batch = {
        "input_ids": jnp.arange(16, dtype=jnp.int32).reshape(2, 8) + 5,
        "input_mask": jnp.ones((2, 8), jnp.int32),
        "segment_ids": jnp.zeros((2, 8), jnp.int32),
        "labels": jnp.ones((2, 8), jnp.int32),
        "label_weights": jnp.ones((2, 8), jnp.int32),
    }
    for mode, frozen in (("feature", True), ("finetune", False)):
        cfg = _cfg(f"task=conll2003_ner,size=mini,mode={mode}").model
        model = models.build(cfg)
        params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])

        def loss(p, model=model):
            rngs = {"dropout": jax.random.key(1)}
            out, _ = model.apply({"params": p}, batch, train=True, rngs=rngs)
            return out["logits"].mean()

        grads = jax.grad(loss)(params)
        enc = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["encoder"]))
        head = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["head"]))
        assert head > 0
        assert (enc == 0.0) == frozen, (mode, enc)


def test_select_features_errors_name_the_problem():
    seq = jnp.zeros((2, 4, 8))
    inter = {"hidden_states": [seq, seq, seq]}
    with pytest.raises(ValueError, match="needs >= 4 layers"):
        heads.select_features(seq, inter, "last4_concat")
    with pytest.raises(ValueError, match="pooler"):
        heads.select_features(seq, inter, "pooled")
    with pytest.raises(ValueError, match="unknown features"):
        heads.select_features(seq, inter, "cls")


def test_multitask_classifier_routes_each_example_to_its_task_head():
    cfg = {**_cfg("task=sst2,size=tiny").model.to_dict(), "num_classes": (2, 6)}
    model = models.build(ml_collections.ConfigDict(cfg))
    batch = {
        "input_ids": jnp.ones((2, 8), jnp.int32),
        "input_mask": jnp.ones((2, 8), jnp.int32),
        "segment_ids": jnp.zeros((2, 8), jnp.int32),
        "task_id": jnp.array([0, 1], jnp.int32),
    }
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)["params"])
    logits = model.apply({"params": params}, batch)[0]["logits"]
    assert logits.shape == (2, 6)
    assert bool(jnp.all(logits[0, 2:] < -1e8)) and bool(jnp.all(logits[1] > -1e8))
    only_second = {**batch, "task_id": jnp.array([1, 1], jnp.int32)}
    other = model.apply({"params": params}, only_second)[0]["logits"]
    np.testing.assert_allclose(other[1], logits[1], rtol=1e-6)


def test_init_dir_sets_shape_vocabulary_and_source(tmp_path):
    shape = {"num_layers": 6, "hidden_size": 384, "num_heads": 12, "intermediate_size": 1536}
    model = {"name": "bert_pretrain", "size": "custom", "vocab_size": 30522, "gelu": "erf", **shape}
    (tmp_path / "config.json").write_text(json.dumps({"model": model}))
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    cfg = finetune.get_config(f"task=wnut17_ner,init={tmp_path}")
    assert (cfg.model.size, cfg.model.num_layers, cfg.model.hidden_size) == ("custom", 6, 384)
    assert cfg.model.gelu == "erf" and cfg.model.name == "bert_tagger"
    assert cfg.model.num_classes == 13  # O + B/I x 6 WNUT-17 types
    assert cfg.data.vocab == f"wordpiece:{tmp_path / 'vocab.txt'}"
    assert cfg.transfer.init_from == str(tmp_path)
    # A tlx run dir: size and the run's own vocabulary spec.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"model": {"size": "mini", "vocab_size": 8000}, "data": {"vocab": "sp8000"}})
    )
    cfg = finetune.get_config(f"task=sst2,init={run}")
    assert (cfg.model.size, cfg.model.vocab_size, cfg.data.vocab) == ("mini", 8000, "sp8000")
