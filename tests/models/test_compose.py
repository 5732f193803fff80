"""The model registry and the one encoder + head composition (tlx.models.compose)."""

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # --import-mode=importlib
from legacy_cases import CASES, batch_for  # noqa: E402

from tlx import heads, models, objectives  # noqa: E402
from tlx.models import bert, compose  # noqa: E402

NAMES = (
    "bert_pretrain", "bert_classifier", "bert_tagger", "gpt_lm", "gpt_classifier", "gpt_tagger",
    "word_classifier", "word_tagger", "word2vec", "glove", "cove_mt", "elmo_lm",
    "contextual_classifier", "contextual_tagger",
)  # fmt: skip


def _cfg(case: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(CASES[case])


def _init(model, batch):
    return nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), batch))["params"]


def test_registry_keeps_every_model_name():
    """Configs and saved runs' config.json name these; renaming one breaks them."""
    assert set(models.REGISTRY) == set(NAMES) and set(models.MODELS) == set(NAMES)
    with pytest.raises(ValueError, match=r"unknown model.name 'bert_clasifier'.*'bert_tagger'"):
        models.build(ml_collections.ConfigDict({"name": "bert_clasifier"}))


@pytest.mark.parametrize("name", NAMES)
def test_head_kind_and_num_classes(name):
    cfg = ml_collections.ConfigDict({"name": name, "num_classes": [2, 3]})
    want = "tagging" if name.endswith("_tagger") else "sentence" if "classifier" in name else None
    assert models.head_kind(cfg) == want
    assert models.num_classes(cfg) == ((2, 3) if want else None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_task_model_is_encoder_and_head(case):
    """`encoder/...` and `head/...` are the only roots, whatever the family: the paths every
    transfer regex relies on. Outputs: logits, plus what the encoder hands on."""
    cfg = _cfg(case)
    model = models.build(cfg)
    assert isinstance(model, compose.EncoderWithHead)
    batch = batch_for(CASES[case])
    params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))["params"]
    assert set(params) == {"encoder", "head"}
    outputs, inter = jax.eval_shape(lambda p: model.apply({"params": p}, batch), params)
    extra = {"gpt": {"lm_hidden", "lm_embedding"}, "contextual": {"penalty"}}
    assert set(outputs) == {"logits", *extra.get(cfg.name.split("_")[0], ())}
    assert compose.OUTPUTS not in inter and "hidden_states" in inter
    n = models.num_classes(cfg)
    tagging = models.head_kind(cfg) == "tagging"
    assert outputs["logits"].shape == ((2, 8, n) if tagging else (2, max(np.atleast_1d(n))))


def test_full_size_bert_classifier_is_the_encoder_plus_one_dense():
    """eval_shape at BERT-Base: the encoder of the pretraining model (109,482,240) + D*C + C."""
    cfg = ml_collections.ConfigDict({"name": "bert_classifier", "size": "base", "num_classes": 2})
    model = models.build(cfg)
    batch = {k: jnp.zeros((1, 128), jnp.int32) for k in ("input_ids", "segment_ids", "input_mask")}
    params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))["params"]
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
    assert count(params["encoder"]) == 109_482_240
    assert count(params["head"]) == 768 * 2 + 2


@pytest.mark.parametrize("case", ["bert_classifier_feature", "gpt_tagger"])
def test_frozen_encoder_gets_no_gradient(case):
    """frozen_encoder: stop_gradient over the encoder's outputs; only the head learns."""
    cfg = ml_collections.ConfigDict({**CASES[case], "frozen_encoder": True})
    model = models.build(cfg)
    batch = batch_for(CASES[case])
    params = _init(model, batch)

    def loss(p):
        outputs, _ = model.apply(
            {"params": p}, batch, train=True, rngs={"dropout": jax.random.key(1)}
        )
        return jnp.sum(outputs["logits"] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["encoder"]))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["head"])) > 0


def test_mixture_head_picks_each_examples_task():
    """One head per task (head/task_i): an example's logits are its own task's head's, and the
    classes its task lacks are masked out of the softmax."""
    model = models.build(_cfg("bert_classifier_mixture"))  # num_classes [2, 3, 1]
    batch = batch_for(CASES["bert_classifier_mixture"])  # task_id [0, 2]
    params = _init(model, batch)
    assert sorted(params["head"]) == ["task_0", "task_1", "task_2"]
    logits = model.apply({"params": params}, batch)[0]["logits"]  # [2, 3]
    seq, inter = bert.TaskEncoder(model.encoder.config).apply({"params": params["encoder"]}, batch)
    for row, task, n in ((0, 0, 2), (1, 2, 1)):
        own = heads.SentenceHead(n).apply(
            {"params": params["head"][f"task_{task}"]}, seq, inter, batch, deterministic=True
        )
        np.testing.assert_allclose(logits[row, :n], own[row], rtol=1e-6)
        assert np.all(np.asarray(logits[row, n:]) < -1e8)
    loss, _ = objectives.get("classification")(
        {"logits": logits}, {**batch, "label": jnp.array([1, 0])}
    )
    assert np.isfinite(float(loss))


def test_sentence_head_positions():
    seq = jnp.arange(2 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 1)
    batch = {
        "input_ids": jnp.zeros((2, 5), jnp.int32),
        "input_mask": jnp.array([[1] * 3 + [0] * 2, [1] * 5]),
    }
    np.testing.assert_array_equal(heads.extract_positions(batch, "first"), [0, 0])
    np.testing.assert_array_equal(heads.extract_positions(batch, "last"), [2, 4])
    with pytest.raises(ValueError, match="'middle'"):
        heads.extract_positions(batch, "middle")
    head = heads.SentenceHead(1, features="last", dropout_rate=0.0, position="last")
    params = nn.unbox(head.init(jax.random.PRNGKey(0), seq, {}, batch, deterministic=True))
    w = params["params"]["dense"]["kernel"][0, 0]
    out = head.apply(params, seq, {}, batch, deterministic=True)[:, 0]
    np.testing.assert_allclose(out, w * jnp.array([2.0, 9.0]), rtol=1e-6)
