"""A downstream task is defined once, in its data_pipelines registry entry: `python -m tlx.tasks`,
the README's task table, the configs' heads / objectives / seq_len and the table launchers'
task lists all read it from there."""

import importlib.util
import json
import pathlib
import sys

import ml_collections
import pytest

import data_pipelines
from configs import common
from configs.bert import finetune as bert_finetune
from configs.cove import finetune as cove_finetune
from configs.elmo import finetune as elmo_finetune
from configs.embeddings import classify
from configs.gpt import finetune as gpt_finetune
from data_pipelines import paths
from tlx import tasks
from tlx.data import verify

REPO = pathlib.Path(__file__).resolve().parents[1]
TASKS = data_pipelines.downstream_tasks()


def _table_common():
    """launch/table_common.py (a script directory, not a package), loaded once by path."""
    if "table_common" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "table_common", REPO / "launch/table_common.py"
        )
        sys.modules["table_common"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["table_common"])
    return sys.modules["table_common"]


def test_registry_lists_the_file_tasks_and_the_tfds_ones_apart():
    every = data_pipelines.downstream_tasks(network=True)
    assert {"sst2", "sst5", "trec", "ag_news", "conll2003_ner"} <= set(TASKS)
    assert set(every) - set(TASKS) == {"sst2_tfds", "mrpc_tfds", "rte_tfds", "conll2003_ner_tfds"}
    for name in every:
        info = data_pipelines.downstream_info(name)
        assert info.needs_network == name.endswith("_tfds"), name
        assert info.seq_len >= 3 and info.title and info.data, name
        if not info.needs_network:  # a folder of the data root
            assert (paths.data_dir() / info.data).is_dir(), (name, info.data)
    assert data_pipelines.downstream_info("ag_news").num_classes == 4
    assert data_pipelines.downstream_info("sst5").num_classes == 5
    assert data_pipelines.downstream_info("sst2_tfds").seq_len == 64  # the base task's


def test_every_file_a_task_reads_is_one_the_manifest_vouches_for():
    index = verify.manifest_index()
    root = paths.data_dir()
    for name in TASKS:
        for split in data_pipelines.downstream_info(name).splits:
            files = data_pipelines.tasks.split_files(name, split, root)
            assert len(files) >= 2, (name, split)  # the vocabulary and the split's file
            for f in files:
                assert f.relative_to(root).as_posix() in index, (name, split, f)


def test_readme_task_table_is_the_registry_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = tasks.markdown(tasks.rows())
    assert tasks.replace_table(readme, table) == readme, (
        "README.md's task table differs from the registry: run `python -m tlx.tasks readme`"
    )
    listed = [line.split("`")[1] for line in table.splitlines()[2:]]
    assert listed == list(data_pipelines.downstream_tasks(network=True))
    row = next(line for line in table.splitlines() if line.startswith("| `ag_news` |"))
    assert (
        "| 4: World, Sports, Business, Sci/Tech | accuracy | 128 | 6,000\\* / 800\\* / 800\\* |"
        in row
    )
    with pytest.raises(ValueError, match="task table"):
        tasks.replace_table("no markers", table)


def test_list_cli_prints_every_task(capsys):
    assert tasks.main(["list", "--no-sizes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["task", "kind", "classes", "metric", "seq_len"]
    names = [line.split()[0] for line in out[1:]]
    assert names == list(data_pipelines.downstream_tasks(network=True))
    ag = next(line for line in out if line.startswith("ag_news "))
    assert "4: World, Sports, Business, Sci/Tech" in ag and "classification/ag_news" in ag


def _elmo_run(tmp_path) -> str:
    model = {"name": "elmo_lm", "size": "tiny", "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps({"model": model}))
    return str(tmp_path)


@pytest.mark.parametrize("task", TASKS)
def test_every_config_takes_head_objective_classes_and_seq_len_from_the_registry(task, tmp_path):
    info = data_pipelines.downstream_info(task)
    head = "tagger" if info.kind == "tagging" else "classifier"
    objective = "tagging" if info.kind == "tagging" else "classification"
    configs = {
        "bert": bert_finetune.get_config(f"task={task}"),
        "gpt": gpt_finetune.get_config(f"task={task}"),
        "word": classify.get_config(f"task={task}"),
        "contextual": cove_finetune.get_config(f"task={task},features=glove"),
        "contextual ": elmo_finetune.get_config(f"task={task},init={_elmo_run(tmp_path)}"),
    }
    for family, cfg in configs.items():
        assert cfg.model.name == f"{family.strip()}_{head}", (family, task)
        assert cfg.objective.name == objective and cfg.model.num_classes == info.num_classes
        assert cfg.data.seq_len == info.seq_len and cfg.data.task == task, (family, task)
        # A recipe config runs train.epochs; train.steps <= 0 means "from epochs".
        assert cfg.train.epochs > 0 and cfg.train.steps == 0, (family, task)
    assert configs["bert"].model.features == ("last" if info.kind == "tagging" else "pooled")


def test_runlocal_keeps_a_step_budget_and_the_mixture_one_head_per_member():
    cfg = bert_finetune.get_config("task=ag_news,runlocal")
    assert (cfg.train.epochs, cfg.train.steps) == (0.0, 4)
    mix = common.downstream_task("glue_mix", mixture=True)
    assert mix.members == ("sst2", "trec", "mrpc", "rte") and mix.num_classes == (2, 6, 2, 2)
    assert mix.seq_len == 128 and mix.head == "classifier"
    cfg = bert_finetune.get_config("task=glue_mix")
    assert cfg.model.num_classes == (2, 6, 2, 2) and (cfg.train.epochs, cfg.train.steps) == (
        0,
        1000,
    )
    with pytest.raises(ValueError, match="mixture"):
        gpt_finetune.get_config("task=glue_mix")
    with pytest.raises(ValueError, match=r"'nope' is not a downstream task; known: .*ag_news"):
        bert_finetune.get_config("task=nope")


@pytest.mark.parametrize("module", [bert_finetune, gpt_finetune])
def test_scratch_takes_the_shape_and_vocabulary_of_init_but_no_weights(module, tmp_path):
    model = {"name": "x", "size": "mini", "num_layers": 3, "hidden_size": 64, "vocab_size": 900}
    (tmp_path / "config.json").write_text(json.dumps({"model": model, "data": {"vocab": "sp900"}}))
    pretrained = module.get_config(f"task=trec,init={tmp_path}")
    scratch = module.get_config(f"task=trec,init={tmp_path},scratch")
    assert pretrained.transfer.init_from == str(tmp_path) and scratch.transfer.init_from == ""
    assert scratch.model.to_dict() == pretrained.model.to_dict()
    assert scratch.data.vocab == pretrained.data.vocab == "sp900"
    assert scratch.model.num_layers == 3
    with pytest.raises(KeyError, match="scratch takes its shape from init"):
        module.get_config("task=trec,scratch")


def test_table_tasks_come_from_the_registry_and_unknown_ones_are_named():
    tc = _table_common()
    assert tc.TASKS == TASKS
    results = {
        "a/ag_news": {"seconds": 60.0, "best/accuracy": 88.04},
        "a/sst2": {"seconds": 60.0, "best/accuracy": 80.0},
        "b/conll2003_ner": {"seconds": 30.0, "best/f1": 51.0},
    }
    table = tc.markdown_table(results).splitlines()
    assert table[0] == "| row | sst2 (accuracy) | ag_news (accuracy) | conll2003_ner (f1) | time |"
    assert table[2] == "| a | 80.0 | 88.0 | - | 2.0 min |"
    assert table[3] == "| b | - | - | 51.0 | 0.5 min |"
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['agnews'\]; known: sst2, .*ag_news"):
        tc.markdown_table({**results, "a/agnews": {"seconds": 1.0}})
    with pytest.raises(KeyError, match="agnews"):
        tc.check_tasks(["sst2", "agnews"], KeyError)
    tc.check_tasks(["sst2_tfds", "ag_news"])  # a TFDS task is known, just not a default column


def test_cap_epochs_caps_epochs_when_steps_come_from_them(monkeypatch):
    tc = _table_common()
    monkeypatch.setattr(tc.steps, "resolve_task", lambda cfg: cfg.data.task)
    monkeypatch.setattr(tc.input_pipeline, "split_size", lambda cfg, split: 6000)

    def cfg(steps, epochs=3.0):
        c = ml_collections.ConfigDict({"train": {"steps": steps, "epochs": epochs}})
        c.train.eval_every = -1
        c.data = {"task": "ag_news"}
        return c

    recipe = cfg(0)
    tc.cap_epochs(recipe, 3.0, max_steps=150, batch=16)  # 150 x 16 = 2,400 = 0.4 of 6,000
    assert recipe.train.epochs == pytest.approx(0.4) and recipe.train.steps == 0
    assert recipe.train.eval_every == 75  # twice in a run shorter than an epoch
    roomy = cfg(0)
    tc.cap_epochs(roomy, 3.0, max_steps=10_000, batch=16)
    assert roomy.train.epochs == 3.0 and roomy.train.eval_every == -1
    budget = cfg(500, epochs=0.0)  # train.steps > 0 wins: the cap applies to it
    tc.cap_epochs(budget, 3.0, max_steps=150, batch=16)
    assert (budget.train.steps, budget.train.epochs) == (150, 0.0)
