"""CoVe and ELMo end to end: pretrain a few steps, resume, translate / score, then transfer the
frozen features to a downstream task through configs/{cove,elmo}/finetune.py."""

import json
import pathlib

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs.cove import finetune as cove_finetune
from configs.cove import translate
from configs.elmo import finetune as elmo_finetune
from configs.elmo import pretrain
from tlx import checkpoint, train
from tlx import translate as tlx_translate


def _params(workdir, sub="checkpoints") -> dict:
    """Flattened {path: array} of a run's latest checkpoint."""
    mngr = ocp.CheckpointManager(
        str(pathlib.Path(workdir) / sub), item_handlers={"params": ocp.StandardCheckpointHandler()}
    )
    params = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        params=ocp.args.StandardRestore()))["params"]  # fmt: skip
    mngr.close()
    return {k: np.asarray(v) for k, v in checkpoint.flatten(params).items()}


def final_step(workdir) -> int:
    return json.loads((workdir / "final_metrics.json").read_text())["step"]


def _unlocked(cfg):
    cfg.unlock()
    return cfg


@pytest.fixture(scope="module")
def cove_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cove")
    train.train_and_evaluate(translate.get_config("runlocal"), str(workdir))
    return workdir


@pytest.fixture(scope="module")
def elmo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("elmo")
    cfg = _unlocked(pretrain.get_config("runlocal"))
    cfg.mesh.model = 2  # the biLM's gates and softmax rows sharded over 2 devices
    train.train_and_evaluate(cfg, str(workdir))
    return workdir


def test_cove_translates_with_glove_frozen_and_reports_bleu(cove_run):
    final = json.loads((cove_run / "final_metrics.json").read_text())
    assert np.isfinite(final["eval/loss"]) and final["eval/perplexity"] > 1.0
    # The config's bleu evaluator ran once, at the end, on the first 16 dev sentences.
    assert final["bleu/sentences"] == 16 and 0.0 <= final["bleu/bleu"] <= 100.0
    rows = [json.loads(line) for line in (cove_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "bleu/bleu" in r] == [final_step(cove_run)]
    params = _params(cove_run)
    from tlx import wordvec

    glove = wordvec.glove6b()
    row = glove.index["film"] + 5  # words:glove6b: word i has id i + 5
    np.testing.assert_array_equal(params["cove/embed/embedding"][row], glove.vectors[row - 5])
    result = tlx_translate.translate_run(str(cove_run), "validation", beam=2, batch=64, limit=64)
    assert result["sentences"] == 64 and 0.0 <= result["bleu"] <= 100.0
    lines = (cove_run / "translations_validation.txt").read_text().splitlines()
    assert len(lines) == 64


def test_cove_features_transfer_frozen(cove_run, tmp_path):
    cfg = cove_finetune.get_config(f"task=trec,init={cove_run},runlocal")
    train.train_and_evaluate(cfg, str(tmp_path))
    src, dst = _params(cove_run), _params(tmp_path)
    cove = [k for k in dst if k.startswith("encoder/cove/")]
    assert "encoder/cove/embed/embedding" in cove and len(cove) > 4
    for k in cove:  # loaded from the MT run and never updated
        np.testing.assert_array_equal(dst[k], src[k.removeprefix("encoder/")], err_msg=k)
    assert not any(k.startswith("decoder/") for k in dst)
    with pytest.raises(ValueError, match="holds a 'cove_mt' run; expected 'elmo_lm'"):
        elmo_finetune.get_config(f"init={cove_run}")


def test_elmo_resumes_then_scalar_mix_trains_over_frozen_bilm(elmo_run, tmp_path, capsys):
    cfg = _unlocked(pretrain.get_config("runlocal"))
    cfg.mesh.model = 2
    cfg.train.steps = 6
    capsys.readouterr()
    train.train_and_evaluate(cfg, str(elmo_run))
    assert "resumed from" in capsys.readouterr().out
    arg = f"task=conll2003_ner,mix=all,init={elmo_run},runlocal"
    cfg = _unlocked(elmo_finetune.get_config(arg))
    cfg.model.mix_l2 = 0.1
    train.train_and_evaluate(cfg, str(tmp_path))
    src, dst = _params(elmo_run), _params(tmp_path)
    bilm = [k for k in dst if k.startswith("encoder/bilm/")]
    assert len(bilm) > 10
    for k in bilm:
        np.testing.assert_array_equal(dst[k], src[k.removeprefix("encoder/")], err_msg=k)
    assert np.abs(dst["encoder/scalar_mix/scalars"]).sum() > 0  # trained from zeros
    assert not any(k.startswith("softmax/") for k in dst)


def test_glove_row_is_frozen_glove_and_scratch_row_trains_its_table(tmp_path):
    from tlx import wordvec

    cfg = cove_finetune.get_config("task=sst2,features=glove,runlocal")
    assert cfg.optim.frozen == ["encoder/embed/.*"] and not cfg.transfer.init_from
    train.train_and_evaluate(cfg, str(tmp_path / "glove"))
    table = _params(tmp_path / "glove")["encoder/embed/embedding"]
    glove = wordvec.glove6b()
    np.testing.assert_array_equal(table[5:], glove.vectors)  # words:glove6b: word i is id i + 5
    scratch = cove_finetune.get_config("task=sst2,features=scratch")
    assert scratch.optim.frozen == [] and not scratch.transfer.init_vectors
    with pytest.raises(KeyError, match="features must be one of"):
        cove_finetune.get_config("features=cove")
