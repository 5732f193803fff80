"""HF <-> tlx GPT-2 conversion: parity with `transformers` both ways on the same weights, exact
round trips, the converted dir as `init_from`, and loud, leave-nothing-behind failures."""

import functools
import json
import os
import sys

os.environ.setdefault("USE_TF", "0")  # transformers would otherwise import TensorFlow (slow)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import safetensors.numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from tlx import checkpoint, convert, models  # noqa: E402

HF_SMALL = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64)
TLX_SMALL = {
    "name": "gpt_lm",
    "size": "custom",
    "variant": "gpt2",
    "num_layers": 2,
    "hidden_size": 64,
    "num_heads": 4,
    "intermediate_size": 256,
    "vocab_size": 300,
    "max_position": 64,
    "layer_norm_eps": 1e-5,
    "gelu": "tanh",
    "dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
}
HF_CONFIG_FIELDS = (
    "model_type",
    "architectures",
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "layer_norm_epsilon",
)


# --- helpers ------------------------------------------------------------------------------------


parity = sys.modules["tlx_tests_parity"]  # tests/parity.py, loaded by conftest.py


def _batch(b=3, length=12, seed=0):
    """Random ids; one document per row, right-padded by 0, 4 and 7 positions."""
    rng = np.random.default_rng(seed)
    mask = np.ones((b, length), np.int32)
    for row, pad in zip(range(b), (0, 4, 7)):
        mask[row, length - pad :] = 0
    return {"input_ids": rng.integers(0, 300, (b, length)).astype(np.int32), "input_mask": mask}


def _hf_model(cls, activation="gelu_new", seed=0, **kw):
    """A random HF model in eval mode with every tensor (LN scales, biases too) perturbed, so a
    swapped or transposed tensor cannot hide behind HF's ones/zeros init."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**HF_SMALL, activation_function=activation, **kw)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _hf_outputs(model, batch):
    """(hidden states [embeddings, block 0, ..., ln_f(last block)], logits) as numpy."""
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
            output_hidden_states=True,
        )
        wte = model.get_input_embeddings().weight
        logits = out.logits if hasattr(out, "logits") else out.last_hidden_state @ wte.T
    return [s.numpy() for s in out.hidden_states], logits.numpy()


def _tlx_apply(params, model_config, batch):
    """The whole tlx model (jitted: op-by-op dispatch compiles every op, slow on 2 cores)."""
    model = models.build(ml_collections.ConfigDict(model_config))
    return jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(params, batch)


def _tlx_logits(params, model_config, batch):
    """`GptForCausalLM.logits`, the generation path, on single-document rows."""
    model = models.build(ml_collections.ConfigDict(model_config))
    fn = jax.jit(
        lambda p, ids, doc: model.apply({"params": p}, ids, document_ids=doc, method=model.logits)
    )
    return np.asarray(fn(params, batch["input_ids"], batch["input_mask"]))


def _hf_ref(model, batch):
    """HF's (states, logits) in float32, then in float64 (the ground truth); leaves it float64."""
    return _hf_outputs(model.float(), batch), _hf_outputs(model.double(), batch)


def _check_parity(check, hf32, hf64, out, inter, mask):
    """Every hidden state and the logits, at the real tokens (padding positions differ by design:
    tlx lets a padding query see only padding keys)."""
    (states32, logits32), (states64, logits64) = hf32, hf64
    real = mask.astype(bool)
    assert len(states64) == len(inter["hidden_states"])
    for i, t in enumerate(inter["hidden_states"]):
        check(f"hidden_{i}", t, states64[i], states32[i], where=real)
    if "lm_hidden" in out:
        logits = np.asarray(out["lm_hidden"] @ out["lm_embedding"].T)  # [B, L, V]
        rows, last = np.arange(len(mask)), mask.sum(-1) - 1  # each row's last real token
        check("logits", logits, logits64, logits32, where=real)
        check("last_logits", logits[rows, last], logits64[rows, last], logits32[rows, last])


def _random_tlx_params(model_config, seed=0):
    """Random params of the model's exact tree, drawn in numpy from `jax.eval_shape(init)`;
    LN scales near 1, everything else small."""
    model = models.build(ml_collections.ConfigDict(model_config))
    abstract = jax.eval_shape(lambda r: model.init(r, _batch()), jax.random.PRNGKey(0))
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


def _load_hf(cls, path):
    model, info = cls.from_pretrained(path, use_safetensors=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model.eval()


# --- 1. parity, HF -> tlx -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls,activation,gelu",
    [
        (transformers.GPT2LMHeadModel, "gelu_new", "tanh"),
        (transformers.GPT2Model, "gelu", "erf"),  # no "transformer." prefix, no lm_head
    ],
    ids=["lm_head_gelu_new", "base_gelu_erf"],
)
def test_hf_to_tlx_parity(tmp_path, cls, activation, gelu):
    hf = _hf_model(cls, activation)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model_config = convert.import_hf("gpt2", str(tmp_path / "hf"), str(tmp_path / "tlx"))
    assert model_config == {**TLX_SMALL, "gelu": gelu}
    params, stored, step = convert.read_checkpoint(str(tmp_path / "tlx"))
    assert step == 0 and stored == model_config and sorted(params) == ["decoder"]

    batch = _batch()
    hf32, hf64 = _hf_ref(hf, batch)
    out, inter = _tlx_apply(params, model_config, batch)
    check = parity.Checker()
    _check_parity(check, hf32, hf64, out, inter, batch["input_mask"])
    real = batch["input_mask"].astype(bool)
    logits = _tlx_logits(params, model_config, batch)
    check("logits_method", logits, hf64[1], hf32[1], where=real)
    check.assert_ok()


def test_packed_row_matches_hf_per_document(tmp_path):
    """HF has no document_ids: a tlx row packing two documents (positions restarting at 0)
    must give each document's HF logits, computed on its own row."""
    hf = _hf_model(transformers.GPT2LMHeadModel, "gelu_pytorch_tanh", seed=1)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    model_config = convert.import_hf("gpt2", str(tmp_path / "hf"), str(tmp_path / "tlx"))
    params, _, _ = convert.read_checkpoint(str(tmp_path / "tlx"))
    ids = np.random.default_rng(1).integers(0, 300, (1, 12)).astype(np.int32)
    packed = {
        "input_ids": ids,
        "document_ids": np.array([[1] * 5 + [2] * 7], np.int32),
        "positions": np.array([list(range(5)) + list(range(7))], np.int32),
    }
    out, _ = _tlx_apply(params, model_config, packed)
    logits = np.asarray(out["lm_hidden"] @ out["lm_embedding"].T)[0]  # [L, V]
    rows = np.zeros((2, 7), np.int32)  # the documents as two rows, the first right-padded
    rows[0, :5], rows[1] = ids[0, :5], ids[0, 5:]
    mask = np.ones_like(rows)
    mask[0, 5:] = 0
    (_, logits32), (_, logits64) = _hf_ref(hf, {"input_ids": rows, "input_mask": mask})
    check = parity.Checker()
    check("doc_0", logits[:5], logits64[0, :5], logits32[0, :5])
    check("doc_1", logits[5:], logits64[1], logits32[1])
    check.assert_ok()


# --- 2. parity, tlx -> HF -----------------------------------------------------------------------


@pytest.mark.parametrize("gelu,activation", [("tanh", "gelu_new"), ("erf", "gelu")])
def test_tlx_to_hf_parity_lm(tmp_path, gelu, activation):
    model_config = {**TLX_SMALL, "gelu": gelu, "intermediate_size": 96, "layer_norm_eps": 1e-6}
    params = _random_tlx_params(model_config)
    run = _fake_run(tmp_path / "run", params, model_config)
    hf_config = convert.export_hf("gpt2", str(run), str(tmp_path / "hf"))
    assert hf_config["architectures"] == ["GPT2LMHeadModel"]
    assert hf_config["activation_function"] == activation and hf_config["n_inner"] == 96
    assert "lm_head.weight" not in safetensors.numpy.load_file(
        tmp_path / "hf" / "model.safetensors"
    )

    hf = _load_hf(transformers.GPT2LMHeadModel, tmp_path / "hf")
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied
    assert hf.config.layer_norm_epsilon == 1e-6
    batch = _batch()
    hf32, hf64 = _hf_ref(hf, batch)
    out, inter = _tlx_apply(params, model_config, batch)
    check = parity.Checker()
    _check_parity(check, hf32, hf64, out, inter, batch["input_mask"])
    check.assert_ok()


def test_tlx_to_hf_classifier_exports_the_decoder(tmp_path):
    """A fine-tuned gpt_classifier run exports its decoder as GPT2Model (the task head has no
    HF GPT-2 place), and that file imports back as a gpt_lm with the identical decoder."""
    model_config = {**TLX_SMALL, "name": "gpt_classifier", "num_classes": 3, "gelu": "erf"}
    params = _random_tlx_params(model_config, seed=2)
    run = _fake_run(tmp_path / "run", params, model_config)
    hf_config = convert.export_hf("gpt2", str(run), str(tmp_path / "hf"))
    assert hf_config["architectures"] == ["GPT2Model"]
    tensors = safetensors.numpy.load_file(tmp_path / "hf" / "model.safetensors")
    assert "wte.weight" in tensors and not any("classifier" in k for k in tensors)

    hf = _load_hf(transformers.GPT2Model, tmp_path / "hf")
    batch = _batch()
    hf32, hf64 = _hf_ref(hf, batch)
    out, inter = _tlx_apply(params, model_config, batch)
    check = parity.Checker()
    _check_parity(check, hf32, hf64, {}, inter, batch["input_mask"])
    check.assert_ok()

    back = convert.import_hf("gpt2", str(tmp_path / "hf"), str(tmp_path / "back"))
    assert back == {**TLX_SMALL, "gelu": "erf"}
    _assert_trees_equal(
        convert.read_checkpoint(str(tmp_path / "back"))[0], {"decoder": params["encoder"]}
    )


def test_export_migrates_a_run_from_before_compose(tmp_path):
    """A gpt_classifier run saved before tlx.models.compose (decoder/ + classifier/) exports
    exactly the tensors of today's layout (encoder/ + head/): export-hf renames the old paths."""
    model_config = {**TLX_SMALL, "name": "gpt_classifier", "num_classes": 3}
    params = _random_tlx_params(model_config, seed=3)
    old = {"decoder": params["encoder"], "classifier": params["head"]}
    tensors = {}
    for name, tree in (("new", params), ("old", old)):
        run = _fake_run(tmp_path / name, tree, model_config)
        convert.export_hf("gpt2", str(run), str(tmp_path / f"hf_{name}"))
        tensors[name] = safetensors.numpy.load_file(tmp_path / f"hf_{name}" / "model.safetensors")
    assert "wte.weight" in tensors["new"] and tensors["old"].keys() == tensors["new"].keys()
    for k, v in tensors["new"].items():
        np.testing.assert_array_equal(tensors["old"][k], v, err_msg=k)


# --- 3. exact round trips -----------------------------------------------------------------------


def test_round_trip_hf_tlx_hf_is_exact(tmp_path):
    hf = _hf_model(transformers.GPT2LMHeadModel, "gelu_new", layer_norm_epsilon=1e-6, n_inner=96)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    convert.import_hf("gpt2", str(tmp_path / "hf"), str(tmp_path / "tlx"))
    convert.export_hf("gpt2", str(tmp_path / "tlx"), str(tmp_path / "hf2"))

    a = safetensors.numpy.load_file(tmp_path / "hf" / "model.safetensors")
    b = safetensors.numpy.load_file(tmp_path / "hf2" / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert all(b[k].dtype == np.float32 and np.array_equal(a[k], b[k]) for k in a)
    ca = json.loads((tmp_path / "hf" / "config.json").read_text())
    cb = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert {k: ca[k] for k in HF_CONFIG_FIELDS} == {k: cb[k] for k in HF_CONFIG_FIELDS}


def test_legacy_file_with_mask_buffers_and_lm_head(tmp_path):
    """Files written by old transformers (and OpenAI's converted gpt2) carry the causal-mask
    buffers h.N.attn.bias / masked_bias; some also store the tied lm_head.weight."""

    def legacy(t):
        for n in range(2):
            t[f"transformer.h.{n}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
            t[f"transformer.h.{n}.attn.masked_bias"] = np.array(-1e4, np.float32)
        t["lm_head.weight"] = t["transformer.wte.weight"].copy()

    src = _hf_dir(tmp_path, legacy)
    convert.import_hf("gpt2", str(src), str(tmp_path / "tlx"))
    convert.export_hf("gpt2", str(tmp_path / "tlx"), str(tmp_path / "hf2"))
    a = safetensors.numpy.load_file(src / "model.safetensors")
    b = safetensors.numpy.load_file(tmp_path / "hf2" / "model.safetensors")
    assert sorted(b) == sorted(k for k in a if ".attn.bias" not in k and "masked_bias" not in k
                               and k != "lm_head.weight")  # fmt: skip
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_round_trip_tlx_hf_tlx_is_exact(tmp_path):
    model_config = {**TLX_SMALL, "gelu": "erf", "layer_norm_eps": 1e-6, "dropout_rate": 0.0}
    params = _random_tlx_params(model_config, seed=3)
    run = _fake_run(tmp_path / "run", params, model_config)
    convert.export_hf("gpt2", str(run / "checkpoints"), str(tmp_path / "hf"))  # a checkpoints dir
    assert convert.import_hf("gpt2", str(tmp_path / "hf"), str(tmp_path / "tlx")) == model_config
    _assert_trees_equal(convert.read_checkpoint(str(tmp_path / "tlx"))[0], params)
    # The pure functions agree with the files.
    family = convert.FAMILIES["gpt2"]
    tensors = family.tlx_to_hf(params, model_config)
    again, config_again = family.hf_to_tlx(
        tensors, json.loads((tmp_path / "hf" / "config.json").read_text())
    )
    assert config_again == model_config
    _assert_trees_equal(again, params)


# --- 4. the converted dir as init_from ----------------------------------------------------------


def test_converted_dir_is_an_init_from(tmp_path):
    """As configs/gpt/finetune.py uses it: the decoder loads, the new head keeps its init."""
    src = _hf_dir(tmp_path)
    model_config = convert.import_hf("gpt2", str(src), str(tmp_path / "tlx"))
    clf_config = {**model_config, "name": "gpt_classifier", "num_classes": 2}
    fresh = _random_tlx_params(clf_config)  # stands in for the fresh init; only shapes matter
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), fresh)
    fresh = jax.device_put(fresh, shardings)
    loaded, step = checkpoint.load_pretrained(
        str(tmp_path / "tlx"),
        fresh,
        shardings,
        dont_load=["head/.*"],
        rename=functools.partial(models.migrate_paths, "gpt_classifier"),
    )
    assert step == 0
    hf_tensors = safetensors.numpy.load_file(src / "model.safetensors")
    wte = hf_tensors["transformer.wte.weight"]
    np.testing.assert_array_equal(loaded["encoder"]["token_embed"]["embedding"], wte)
    c_attn = hf_tensors["transformer.h.1.attn.c_attn.weight"]  # [D, 3D]: q | k | v
    np.testing.assert_array_equal(
        loaded["encoder"]["layers"]["layer_1"]["attention"]["key_kernel"],
        c_attn[:, 64:128].reshape(64, 4, 16),
    )
    _assert_trees_equal(loaded["head"], fresh["head"])


# --- 5. loud failures that leave nothing behind -------------------------------------------------


def _hf_dir(tmp_path, edit_tensors=None, edit_config=None, cls=transformers.GPT2LMHeadModel):
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


def _untie(t):
    t["lm_head.weight"] = t["transformer.wte.weight"] + 1.0


@pytest.mark.parametrize(
    "edit_tensors,edit_config,message",
    [
        (
            lambda t: t.pop("transformer.h.1.attn.c_attn.bias"),
            None,
            r"transformer\.h\.1\.attn\.c_attn\.bias \(192,\) is missing",
        ),
        (
            lambda t: t.update(
                {"transformer.h.0.mlp.c_fc.weight": np.zeros((256, 64), np.float32)}
            ),
            None,
            r"transformer\.h\.0\.mlp\.c_fc\.weight: file shape \(256, 64\) != expected \(64, 256\)",
        ),
        (_untie, None, r"lm_head\.weight differs from transformer\.wte\.weight: .* untied"),
        (
            lambda t: t.update({"transformer.h.0.attn.rotary": np.zeros(3, np.float32)}),
            None,
            r"unexpected tensor transformer\.h\.0\.attn\.rotary",
        ),
        (None, lambda c: c.update(activation_function="relu"), r"activation_function='relu'"),
        (
            None,
            lambda c: c.update(scale_attn_by_inverse_layer_idx=True),
            r"scale_attn_by_inverse_layer_idx=True",
        ),
        (None, lambda c: c.update(n_layer=3), r"transformer\.h\.2\..* is missing"),
    ],
    ids=["missing", "wrong_shape", "untied", "unexpected", "activation", "attn_scale", "n_layer"],
)
def test_import_errors_name_the_culprit(tmp_path, edit_tensors, edit_config, message):
    src = _hf_dir(tmp_path, edit_tensors, edit_config)
    with pytest.raises(convert.ConversionError, match=message):
        convert.import_hf("gpt2", str(src), str(tmp_path / "dst"))
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("with_config", [True, False], ids=["run", "bare_checkpoints"])
def test_gpt1_export_is_refused(tmp_path, with_config):
    model_config = {**TLX_SMALL, "variant": "gpt1"}
    run = _fake_run(tmp_path / "run", _random_tlx_params(model_config), model_config)
    src = run if with_config else run / "checkpoints"
    if not with_config:
        (run / "config.json").unlink()  # the variant then shows in the tree: no final_ln
    with pytest.raises(convert.ConversionError, match=r"model\.variant='gpt1' .* post-LN"):
        convert.export_hf("gpt2", str(src), str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


def test_export_checks_config_against_shapes(tmp_path):
    run = _fake_run(tmp_path / "run", _random_tlx_params(TLX_SMALL), TLX_SMALL)
    (run / "config.json").write_text(json.dumps({"model": {**TLX_SMALL, "num_heads": 8}}))
    with pytest.raises(convert.ConversionError, match=r"model\.num_heads=8 in config\.json"):
        convert.export_hf("gpt2", str(run), str(tmp_path / "hf"))
    assert not (tmp_path / "hf").exists()


def test_cli(tmp_path, capsys):
    src = _hf_dir(tmp_path)
    convert.main(["import-hf", "--model=gpt2", f"--src={src}", f"--dst={tmp_path / 'tlx'}"])
    assert '"variant": "gpt2"' in capsys.readouterr().out
    convert.main(
        ["export-hf", "--model=gpt2", f"--src={tmp_path / 'tlx'}", f"--dst={tmp_path / 'out'}"]
    )
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "GPT2LMHeadModel"
    ]
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["import-hf", "--model=bert", f"--src={src}", f"--dst={tmp_path / 'x'}"])
    assert exit_info.value.code == 2
    assert "model_type='gpt2', expected 'bert'" in capsys.readouterr().err
