"""Checkpoints from before tlx.models.compose, and pretraining runs, onto today's task models.

tests/golden/legacy_task_params.json holds the parameter trees (and outputs) that the old
per-family classes built for tests/models/legacy_cases.py's CASES: each must migrate to exactly
today's tree and, on the same numbers, give the same logits.
"""

import json
import pathlib
import re
import sys

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # --import-mode=importlib
from legacy_cases import CASES, batch_for, fill  # noqa: E402

from tlx import models  # noqa: E402
from tlx.models import migrate  # noqa: E402
from tlx.optim import path_str  # noqa: E402

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden"
LEGACY = json.loads((GOLDEN / "legacy_task_params.json").read_text())


def _shapes(tree) -> dict[str, tuple]:
    return {path_str(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _abstract(cfg: dict, batch: dict) -> dict:
    model = models.build(ml_collections.ConfigDict(cfg))
    return nn.unbox(jax.eval_shape(lambda r: model.init(r, batch), jax.random.PRNGKey(0)))["params"]


def test_golden_covers_every_case():
    assert set(LEGACY) - {"_about"} == set(CASES)
    for case, entry in LEGACY.items():
        if case != "_about":
            assert entry["model"] == CASES[case], case


@pytest.mark.parametrize("case", sorted(CASES))
def test_legacy_tree_migrates_to_exactly_the_new_tree(case):
    cfg, old = CASES[case], LEGACY[case]
    renames = models.entry(cfg["name"]).renames
    migrated = migrate.migrate_flat(renames, {p: tuple(s) for p, s in old["params"].items()})
    assert migrated == _shapes(_abstract(cfg, batch_for(cfg)))
    assert models.migrate_paths(cfg["name"], migrated) == {p: p for p in migrated}  # idempotent


@pytest.mark.parametrize("case", sorted(CASES))
def test_legacy_params_give_the_legacy_outputs(case):
    """The old tree's numbers, migrated, give the logits the old classes gave (train=False),
    the same output keys and shapes, and the same intermediates."""
    cfg, old = CASES[case], LEGACY[case]
    params = models.migrate_params(cfg["name"], migrate.unflatten(fill(old["params"])))
    model = models.build(ml_collections.ConfigDict(cfg))
    batch = batch_for(cfg)
    outputs, inter = jax.jit(lambda p: model.apply({"params": p}, batch))(params)
    # The golden logits are float32 from one CPU; another ISA sums in another order (~1e-6).
    # A wrong mapping (a swapped, transposed or left-at-init tensor) moves them by the scale of
    # the path-dependent 0.1-scale fill values, far above 1e-4; reduction order stays below.
    np.testing.assert_allclose(outputs["logits"], old["logits"], rtol=0, atol=1e-4)
    assert {k: list(np.shape(v)) for k, v in outputs.items()} == old["outputs"]
    shapes = {
        k: [list(np.shape(x)) for x in v] if isinstance(v, list) else list(np.shape(v))
        for k, v in inter.items()
    }
    assert shapes == old["intermediates"]


def test_optimizer_state_migrates_with_its_params():
    """Resuming an old run also restores its optimizer state, whose mu / nu hold params-shaped
    subtrees (here under a frozen-encoder multi_transform): rename_within maps them."""
    cfg, old = CASES["gpt_tagger"], LEGACY["gpt_tagger"]

    def state(params, frozen):
        labels = jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if re.fullmatch(frozen, path_str(p)) else "train", params
        )
        tx = optax.multi_transform(
            {"train": optax.adamw(1e-3), "frozen": optax.set_to_zero()}, labels
        )
        return _shapes(jax.eval_shape(tx.init, params))

    old_params = migrate.unflatten(fill(old["params"]))
    old_state = state(old_params, "decoder/.*")
    new_state = state(models.migrate_params(cfg["name"], old_params), "encoder/.*")
    param_map = models.migrate_paths(cfg["name"], old["params"])
    moved = {migrate.rename_within(param_map, p): s for p, s in old_state.items()}
    assert moved == new_state
    assert any("/mu/classifier/" in p for p in old_state) and any("/mu/head/" in p for p in moved)


def test_two_paths_onto_one_is_an_error():
    with pytest.raises(ValueError, match="classifier/dense/kernel and head/dense/kernel"):
        migrate.rename_map(migrate.BERT_TASK, ["classifier/dense/kernel", "head/dense/kernel"])


# ---------------------------------------------------------------- pretraining run -> task model


def _transfer_problems(model: dict, stored: dict, dont_load, ignore) -> list[str]:
    """tlx.checkpoint.load_pretrained's check over paths: every model param outside dont_load
    is in the (migrated) checkpoint with its shape; every other checkpoint param is ignored."""
    keep = [re.compile(r) for r in dont_load]
    unused = [re.compile(r) for r in ignore]
    problems = [
        f"{p} missing or misshaped"
        for p, s in model.items()
        if not any(r.fullmatch(p) for r in keep) and stored.get(p) != s
    ]
    problems += [
        f"{p} unused" for p in stored if p not in model and not any(r.fullmatch(p) for r in unused)
    ]
    return problems


def _golden_tree(name: str) -> dict:
    return {p: tuple(s) for p, s in json.loads((GOLDEN / name).read_text()).items()}


def test_bert_pretrain_loads_into_a_classifier_unrenamed():
    """configs/bert/finetune.py: dont_load head/.*, ignore the pretraining heads."""
    stored = _golden_tree("bert_mini_pretrain_params.json")
    assert models.migrate_paths("bert_classifier", stored) == {p: p for p in stored}
    cfg = {"name": "bert_classifier", "size": "mini", "num_classes": 3}
    model = _shapes(_abstract(cfg, batch_for({**cfg, "vocab_size": 30522})))
    ignore = ["mlm_head/.*", "nsp_head/.*"]
    assert _transfer_problems(model, stored, ["head/.*"], ignore) == []


@pytest.mark.parametrize("name", ["gpt_classifier", "gpt_tagger"])
def test_gpt_lm_decoder_becomes_the_task_encoder(name):
    """configs/gpt/finetune.py: a gpt_lm's decoder/ is the task model's encoder/."""
    stored = _golden_tree("gpt_mini_lm_params.json")
    migrated = migrate.migrate_flat(models.entry(name).renames, stored)
    assert all(p.startswith("encoder/") for p in migrated)
    cfg = {"name": name, "size": "mini", "vocab_size": 8000, "num_classes": 3}
    model = _shapes(_abstract(cfg, batch_for(cfg)))
    assert _transfer_problems(model, migrated, ["head/.*"], []) == []


def test_cove_mt_encoder_becomes_the_contextual_encoders_cove():
    """configs/common.py feature_transfer (glove+cove): only encoder/cove/ loads, cove_mt's
    decoder/ is ignored (its root is not renamed for a contextual model)."""
    mt = {"name": "cove_mt", "vocab_size": 30, "tgt_vocab_size": 11, "embed_dim": 6, "hidden": 4}
    batch = {**batch_for(mt), "decoder_input_ids": batch_for(mt)["input_ids"]}
    batch["decoder_mask"] = batch["input_mask"]
    stored = _shapes(_abstract(mt, batch))
    migrated = migrate.migrate_flat(models.entry("contextual_classifier").renames, stored)
    assert {p.split("/")[0] for p in migrated} == {"encoder", "decoder"}
    cfg = CASES["contextual_classifier_cove"]
    model = _shapes(_abstract(cfg, batch_for(cfg)))
    problems = _transfer_problems(model, migrated, ["(?!encoder/cove/).*"], ["decoder/.*"])
    assert problems == []


def test_elmo_lm_bilm_becomes_the_contextual_encoders_bilm():
    """configs/common.py feature_transfer (elmo): only encoder/bilm/ loads, softmax/ ignored."""
    cfg = CASES["contextual_classifier_elmo"]
    lm = {"name": "elmo_lm", "size": "tiny", **cfg["elmo"]}
    stored = _shapes(_abstract(lm, batch_for({"features": "elmo"})))
    migrated = migrate.migrate_flat(models.entry("contextual_classifier").renames, stored)
    assert {p.split("/")[0] for p in migrated} == {"encoder", "softmax"}
    model = _shapes(_abstract(cfg, batch_for(cfg)))
    problems = _transfer_problems(model, migrated, ["(?!encoder/bilm/).*"], ["softmax/.*"])
    assert problems == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_old_runs_checkpoint_restores_under_todays_names(case, tmp_path):
    """What tlx.evaluate does with a run saved before encoder/ + head/: its params, read from
    disk through checkpoint.restore_params with the model's renames, land on today's tree
    with the old numbers."""
    from jax.sharding import NamedSharding, PartitionSpec

    from tlx import checkpoint

    cfg, old = CASES[case], LEGACY[case]
    stored = migrate.unflatten(fill(old["params"]))
    mngr = checkpoint.manager(str(tmp_path), every=1)
    checkpoint.save(mngr, 3, _FakeState(stored), {"step": 3}, force=True)
    mngr.wait_until_finished()
    mngr.close()
    abstract = _abstract(cfg, batch_for(cfg))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), abstract)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
        checkpoint.restore_params(str(tmp_path), abstract, shardings)  # no renames: loud
    rename = lambda paths: models.migrate_paths(cfg["name"], paths)  # noqa: E731
    step, params = checkpoint.restore_params(str(tmp_path), abstract, shardings, rename=rename)
    assert step == 3
    expected = models.migrate_params(cfg["name"], stored)
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, params, expected)


_FakeState = sys.modules["tlx_tests_conftest"].FakeTrainState  # tests/conftest.py


def test_resuming_an_old_run_says_how_to_use_it(tmp_path):
    """Its own checkpoints under the old names are not resumed; the error says what to do."""
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from tlx import checkpoint, steps

    cfg, old = CASES["word_classifier_cnn"], LEGACY["word_classifier_cnn"]
    mngr = checkpoint.manager(str(tmp_path / "checkpoints"), every=1)
    checkpoint.save(mngr, 3, _FakeState(migrate.unflatten(fill(old["params"]))), {"step": 3},
                    force=True)  # fmt: skip
    mngr.wait_until_finished()
    params = jax.tree.map(jnp.zeros_like, _abstract(cfg, batch_for(cfg)))
    state = steps.TrainState(jnp.zeros((), jnp.int32), params, {"count": jnp.zeros((), jnp.int32)},
                             jax.random.PRNGKey(0))  # fmt: skip
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), state)
    transfer = ml_collections.ConfigDict({"init_from": "", "init_vectors": ""})
    rename = lambda paths: models.migrate_paths(cfg["name"], paths)  # noqa: E731
    with pytest.raises(checkpoint.CheckpointError, match="before the encoder/ \\+ head/ layout"):
        checkpoint.restore_or_init(mngr, state, shardings, transfer, vocab="", rename=rename)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit") as plain:
        checkpoint.restore_or_init(mngr, state, shardings, transfer, vocab="")
    assert "encoder/ + head/" not in str(plain.value)
    mngr.close()
