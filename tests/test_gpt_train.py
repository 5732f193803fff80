"""The GPT paradigm end to end on the real data: causal-LM pretraining from the CLI with
checkpoints, perplexity and resume; generation from the run; finetuning from it with
L = L_task + lambda L_lm on a sentence, a pair and a tagging task."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs.gpt import finetune
from tlx import train

REPO = pathlib.Path(__file__).resolve().parents[1]
# bert_uncased needs no SentencePiece training; the tiny model keeps every step cheap.
PRETRAIN = "configs/gpt/pretrain.py:size=tiny,runlocal,vocab=bert_uncased"


def _cli(module, workdir, *args, check=True):
    cmd = [sys.executable, "-m", module, f"--workdir={workdir}", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def _rows(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gpt_pretrain")
    proc = _cli("tlx.train", workdir, f"--config={PRETRAIN}", "--config.train.steps=4")
    return workdir, proc


def test_pretrain_reports_perplexity_checkpoints_and_resumes(pretrained):
    workdir, first = pretrained
    rows = _rows(workdir)
    train_rows = [r for r in rows if "lm_loss" in r]
    evals = [r for r in rows if "eval/perplexity" in r]
    assert train_rows and evals
    assert evals[-1]["eval/perplexity"] == pytest.approx(np.exp(evals[-1]["eval/lm_loss"]))
    # A fresh tiny model is near uniform over the 30,522-token vocabulary.
    assert 1e3 < evals[-1]["eval/perplexity"] < 1e5
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["vocab_size"] == 30522  # filled in from the data vocabulary
    # Asking for more steps resumes from step 4 rather than starting again.
    more = _cli("tlx.train", workdir, f"--config={PRETRAIN}", "--config.train.steps=6")
    assert "resumed from" in more.stdout
    assert max(r["step"] for r in _rows(workdir)) == 6


def test_generate_cli_continues_a_prompt(pretrained):
    workdir, _ = pretrained
    proc = _cli("tlx.generate", workdir, "--prompt=the city of", "--max_new_tokens=6")
    assert "checkpoints step" in proc.stdout
    assert "the city of" in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize(
    "task,lm_coef,metric",
    [("sst2", 0.0, "accuracy"), ("mrpc", 0.5, "accuracy_and_f1"), ("conll2003_ner", 0.5, "f1")],
)
def test_finetune_from_pretrained_with_lm_coef(pretrained, task, lm_coef, metric, tmp_path):
    workdir, _ = pretrained
    cfg = finetune.get_config(f"task={task},init={workdir},lm_coef={lm_coef},runlocal")
    assert cfg.model.variant == "gpt2" and cfg.model.size == "tiny"
    assert cfg.data.vocab == "bert_uncased" and cfg.data.options.framing == "gpt"
    cfg.train.log_every = 1  # one step per logged row, so the loss decomposes exactly
    cfg.objective.xent_chunk = 16 if task == "mrpc" else 0  # fused LM loss; materialised logits
    final = train.train_and_evaluate(cfg, str(tmp_path))
    assert 0.0 <= final[f"eval/{metric}"] <= 1.0
    rows = [r for r in _rows(tmp_path) if "grad_norm" in r]
    if lm_coef:
        last = rows[-1]
        assert last["loss"] == pytest.approx(last["task_loss"] + lm_coef * last["lm_loss"], 1e-5)
        assert 0 < last["lm_loss"] < 20
    else:
        assert "lm_loss" not in rows[-1]


def test_finetune_from_scratch_and_feature_mode_configs():
    scratch = finetune.get_config("task=trec,size=tiny,variant=gpt1")
    assert scratch.transfer.init_from == "" and scratch.model.variant == "gpt1"
    assert scratch.model.vocab_size is None  # follows the data vocabulary
    feature = finetune.get_config("task=ud_ewt_upos,mode=feature")
    assert feature.model.name == "gpt_tagger" and feature.model.frozen_encoder
    assert feature.optim.frozen == ["encoder/.*"]
    assert feature.objective.lm_coef == 0.0 and feature.model.features == "last4_concat"
    # GPT-1's lambda when finetuning
    assert finetune.get_config("task=sst2").objective.lm_coef == 0.5
    assert finetune.get_config("task=sst2,size=tiny,mode=feature").model.features == "last"
    with pytest.raises(KeyError, match="lm_coeff"):
        finetune.get_config("task=sst2,lm_coeff=0.5")
