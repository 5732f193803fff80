"""The BERT family: HF `transformers` BERT tensors and config.json <-> tlx BERT params."""

import dataclasses
import logging
from collections.abc import Callable

import ml_collections
import numpy as np

from tlx import models
from tlx.checkpoint import flatten, unflatten
from tlx.convert.common import ConversionError, config_mismatches, problems_error, stack_shape
from tlx.models import bert

# transformers.BertConfig defaults, for fields a config.json leaves out.
HF_BERT_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute",
}
# HF hidden_act -> tlx gelu. "gelu" (and "gelu_python") is the exact erf form; the tanh
# approximation has two names in HF, and export writes "gelu_new".
HF_GELU = {"gelu": "erf", "gelu_python": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
TLX_GELU = {"erf": "gelu", "tanh": "gelu_new"}
# Tensors in HF files that are not parameters, or duplicates tlx ties (checked, then dropped).
HF_BERT_IGNORED_SUFFIXES = ("position_ids",)
HF_BERT_TIED = {
    "cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",  # prefixed below
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def _transforms(num_heads: int) -> dict[str, tuple[Callable, Callable]]:
    """kind -> (HF tensor -> tlx param, tlx param -> HF tensor). torch Linear is [out, in]."""
    h = num_heads
    return {
        "copy": (lambda w: w, lambda p: p),
        "dense": (lambda w: w.T, lambda p: p.T),  # [out, in] <-> [in, out]
        "heads_in": (  # [H*Dh, D] <-> [D, H, Dh]
            lambda w: w.T.reshape(w.shape[1], h, -1),
            lambda p: p.reshape(p.shape[0], -1).T,
        ),
        "heads_bias": (lambda b: b.reshape(h, -1), lambda p: p.reshape(-1)),  # [H*Dh] <-> [H, Dh]
        "heads_out": (  # [D, H*Dh] <-> [H, Dh, D]
            lambda w: w.T.reshape(h, -1, w.shape[0]),
            lambda p: p.reshape(-1, p.shape[-1]).T,
        ),
    }


def _bert_table(s: dict, heads: tuple[str, ...], prefix: str) -> list[tuple[str, str, str, tuple]]:
    """Rows (HF key, tlx path, transform kind, HF shape) for sizes `s` and the heads present."""
    d, i, v = s["hidden_size"], s["intermediate_size"], s["vocab_size"]

    def ln(hf, tlx, size=d):
        return [(f"{hf}.weight", f"{tlx}/scale", "copy", (size,)),
                (f"{hf}.bias", f"{tlx}/bias", "copy", (size,))]  # fmt: skip

    def linear(hf, tlx, out_dim, in_dim):
        return [(f"{hf}.weight", f"{tlx}/kernel", "dense", (out_dim, in_dim)),
                (f"{hf}.bias", f"{tlx}/bias", "copy", (out_dim,))]  # fmt: skip

    def table(hf, tlx, rows):
        return (f"embeddings.{hf}.weight", f"encoder/{tlx}/embedding", "copy", (rows, d))

    rows = [
        table("word_embeddings", "token_embed", v),
        table("position_embeddings", "position_embed", s["max_position"]),
        table("token_type_embeddings", "segment_embed", s["type_vocab_size"]),
        *ln("embeddings.LayerNorm", "encoder/embed_ln"),
    ]
    for n in range(s["num_layers"]):
        hf, tlx = f"encoder.layer.{n}", f"encoder/layers/layer_{n}"
        for proj in ("query", "key", "value"):
            rows += [
                (f"{hf}.attention.self.{proj}.weight", f"{tlx}/attention/{proj}_kernel",
                 "heads_in", (d, d)),
                (f"{hf}.attention.self.{proj}.bias", f"{tlx}/attention/{proj}_bias",
                 "heads_bias", (d,)),
            ]  # fmt: skip
        rows += [
            (f"{hf}.attention.output.dense.weight", f"{tlx}/attention/out_kernel", "heads_out",
             (d, d)),
            (f"{hf}.attention.output.dense.bias", f"{tlx}/attention/out_bias", "copy", (d,)),
            *ln(f"{hf}.attention.output.LayerNorm", f"{tlx}/attention_ln"),
            *linear(f"{hf}.intermediate.dense", f"{tlx}/mlp/wi", i, d),
            *linear(f"{hf}.output.dense", f"{tlx}/mlp/wo", d, i),
            *ln(f"{hf}.output.LayerNorm", f"{tlx}/mlp_ln"),
        ]  # fmt: skip
    rows += linear("pooler.dense", "encoder/pooler", d, d)
    rows = [(prefix + hf, *rest) for hf, *rest in rows]
    if "mlm_head" in heads:
        rows += [
            *linear("cls.predictions.transform.dense", "mlm_head/transform", d, d),
            *ln("cls.predictions.transform.LayerNorm", "mlm_head/transform_ln"),
            ("cls.predictions.bias", "mlm_head/output_bias", "copy", (v,)),
        ]
    if "nsp_head" in heads:
        rows += linear("cls.seq_relationship", "nsp_head/dense", 2, d)
    if "classifier" in heads:
        rows += linear("classifier", "head/dense", s["num_classes"], d)
    return rows


def _hf_key_aliases(key: str) -> str:
    """Original-TF-era names (bert-base-uncased's LayerNorm.gamma/beta) -> current names."""
    if ".LayerNorm." in key:
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        )
    return key


def hf_to_tlx(state_dict: dict, hf_config: dict) -> tuple[dict, dict]:
    """HF BERT tensors + config.json -> (tlx params tree, tlx model config section).

    Handles BertModel (no prefix), BertForPreTraining / BertForMaskedLM ("bert." + cls.*) and
    BertForSequenceClassification ("bert." + classifier.*) files. Tensors are cast to float32.
    """
    c = {**HF_BERT_DEFAULTS, **hf_config}
    if c.get("model_type", "bert") != "bert":
        raise ConversionError(f"config.json model_type={c['model_type']!r}, expected 'bert'")
    if c["hidden_act"] not in HF_GELU:
        raise ConversionError(
            f"config.json hidden_act={c['hidden_act']!r} has no tlx equivalent; "
            f"supported: {sorted(HF_GELU)}"
        )
    if c["position_embedding_type"] != "absolute":
        raise ConversionError(
            f"config.json position_embedding_type={c['position_embedding_type']!r}: tlx BERT has "
            "only absolute position embeddings"
        )
    if c["hidden_size"] % c["num_attention_heads"]:
        raise ConversionError(
            f"config.json hidden_size={c['hidden_size']} is not divisible by "
            f"num_attention_heads={c['num_attention_heads']}"
        )
    sd = {_hf_key_aliases(k): v for k, v in state_dict.items()}
    prefix = "bert." if any(k.startswith("bert.") for k in sd) else ""
    heads = tuple(
        name
        for name, marker in (
            ("mlm_head", "cls.predictions."),
            ("nsp_head", "cls.seq_relationship."),
            ("classifier", "classifier."),
        )
        if any(k.startswith(marker) for k in sd)
    )
    if "classifier" in heads and len(heads) > 1:
        raise ConversionError(f"file holds both pretraining heads and a classifier: {heads}")
    model_config = {
        "name": "bert_classifier" if "classifier" in heads else "bert_pretrain",
        "size": "custom",
        "num_layers": int(c["num_hidden_layers"]),
        "hidden_size": int(c["hidden_size"]),
        "num_heads": int(c["num_attention_heads"]),
        "intermediate_size": int(c["intermediate_size"]),
        "vocab_size": int(c["vocab_size"]),
        "max_position": int(c["max_position_embeddings"]),
        "type_vocab_size": int(c["type_vocab_size"]),
        "layer_norm_eps": float(c["layer_norm_eps"]),
        "gelu": HF_GELU[c["hidden_act"]],
        "dropout_rate": float(c["hidden_dropout_prob"]),
        "attention_dropout_rate": float(c["attention_probs_dropout_prob"]),
    }
    if "classifier" in heads:
        if "classifier.weight" not in sd:
            raise ConversionError("classifier.weight is missing from the safetensors file")
        model_config["num_classes"] = int(sd["classifier.weight"].shape[0])

    table = _bert_table(model_config, heads, prefix)
    to_tlx = _transforms(model_config["num_heads"])
    problems = []
    for hf, _, _, shape in table:
        if hf not in sd:
            problems.append(f"{hf} {shape} is missing from the safetensors file")
        elif tuple(sd[hf].shape) != shape:
            problems.append(f"{hf}: file shape {tuple(sd[hf].shape)} != expected {shape}")
    known = {hf for hf, *_ in table}
    for key in sorted(set(sd) - known):
        tied = HF_BERT_TIED.get(key)
        if tied is not None:
            tied = prefix + tied if tied.startswith("embeddings.") else tied
            if tied in sd and not np.array_equal(sd[key], sd[tied]):
                problems.append(
                    f"{key} differs from {tied}: tlx ties it, an untied copy cannot be converted"
                )
        elif not key.endswith(HF_BERT_IGNORED_SUFFIXES):
            problems.append(f"unexpected tensor {key} {tuple(sd[key].shape)} has no tlx place")
    if f"{prefix}pooler.dense.weight" not in sd:
        problems.append(
            "(BertForMaskedLM and add_pooling_layer=False files have no pooler; the tlx encoder "
            "has one, so such files cannot be imported as they are)"
        )
    if problems:
        raise problems_error("cannot convert the HF BERT checkpoint", problems)
    flat = {
        tlx: np.ascontiguousarray(to_tlx[kind][0](np.asarray(sd[hf], np.float32)))
        for hf, tlx, kind, _ in table
    }
    return unflatten(flat), model_config


def resolve_bert_config(model_config: dict):
    """A tlx "model" section (a run's or a converted one) -> its full `bert.BertConfig`."""
    cfg = ml_collections.ConfigDict(dict(model_config))
    models.entry(cfg.name)  # an unknown name is an error naming the known ones
    return bert.model_config(cfg)


# tlx root -> the head's name in the HF table (a bert_classifier's `head/` is HF `classifier`).
TLX_HEADS = {"mlm_head": "mlm_head", "nsp_head": "nsp_head", "head": "classifier"}


def _heads(params: dict) -> tuple[str, ...]:
    return tuple(name for root, name in TLX_HEADS.items() if root in params)


def tlx_to_hf(params: dict, model_config: dict) -> dict[str, np.ndarray]:
    """tlx BERT params -> HF tensors (float32, contiguous): BertModel names for an encoder alone,
    "bert."-prefixed names plus cls.* / classifier.* when heads are present."""
    cfg = resolve_bert_config(model_config)
    sizes = dataclasses.asdict(cfg)
    heads = _heads(params)
    if "classifier" in heads:
        sizes["num_classes"] = int(np.shape(params["head"]["dense"]["kernel"])[-1])
    table = _bert_table(sizes, heads, "bert." if heads else "")
    to_hf = _transforms(cfg.num_heads)
    flat = flatten(params)
    problems = [f"tlx parameter {p} is missing" for _, p, _, _ in table if p not in flat]
    expected_paths = {p for _, p, _, _ in table}
    problems += [f"tlx parameter {p} has no HF name" for p in flat if p not in expected_paths]
    out = {}
    for hf, tlx, kind, shape in table:
        if tlx not in flat:
            continue
        w = np.ascontiguousarray(to_hf[kind][1](np.asarray(flat[tlx], np.float32)))
        if w.shape != shape:
            problems.append(
                f"tlx parameter {tlx} {np.shape(flat[tlx])} gives {hf} {w.shape} != {shape}"
            )
        out[hf] = w
    if problems:
        raise problems_error("cannot export the tlx BERT params", problems)
    return out


def bert_hf_config(params: dict, model_config: dict) -> dict:
    """The HF config.json for the tensors `tlx_to_hf(params, model_config)` writes."""
    cfg = resolve_bert_config(model_config)
    heads = _heads(params)
    arch = {
        (): "BertModel",
        ("mlm_head", "nsp_head"): "BertForPreTraining",
        ("mlm_head",): "BertForMaskedLM",
        ("classifier",): "BertForSequenceClassification",
    }.get(heads)
    if arch is None:
        raise ConversionError(f"no HF BERT architecture has exactly the heads {heads}")
    out = {
        "architectures": [arch],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": TLX_GELU[cfg.gelu],
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "max_position_embeddings": cfg.max_position,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "classifier_dropout": None,
        "tie_word_embeddings": True,
    }
    if "classifier" in heads:
        n = int(np.shape(params["head"]["dense"]["kernel"])[-1])
        out["id2label"] = {str(k): f"LABEL_{k}" for k in range(n)}
        out["label2id"] = {f"LABEL_{k}": k for k in range(n)}
    return out


def bert_model_config(params: dict, stored: dict | None) -> dict:
    """The converted-dir "model" section for `params`: shapes from the tensors, the rest (gelu,
    layer_norm_eps, dropout) from the run's own `stored` section, whose sizes must agree."""
    flat = flatten(params)
    inferred = stack_shape(flat, "encoder", "BERT")
    if "encoder/segment_embed/embedding" not in flat:
        raise ConversionError(
            "not a tlx BERT params tree: encoder/segment_embed/embedding is missing"
        )
    inferred["type_vocab_size"] = np.shape(flat["encoder/segment_embed/embedding"])[0]
    name = "bert_classifier" if "head" in params else "bert_pretrain"
    extra = {}
    if "head" in params:
        if "head/dense/kernel" not in flat:
            raise ConversionError("not a tlx BERT params tree: head/dense/kernel is missing")
        extra = {"num_classes": np.shape(flat["head/dense/kernel"])[1]}
    if stored is None:
        logging.warning("no config.json model section: using tlx defaults for gelu, layer_norm_eps")
        cfg = resolve_bert_config({"name": "bert_pretrain", "size": "custom", **inferred})
    else:
        if stored.get("name") != name:
            raise ConversionError(
                f"config.json model.name={stored.get('name')!r} but the params are a {name} tree"
            )
        cfg = resolve_bert_config(stored)
        wrong = config_mismatches(cfg, inferred)
        wrong += [
            f"model.{k}={stored.get(k)} in config.json but the checkpoint has {v}"
            for k, v in extra.items()
            if stored.get(k) != v
        ]
        if wrong:
            raise problems_error("config.json does not describe the checkpoint", wrong)
    return {
        "name": name,
        "size": "custom",
        **{k: int(v) for k, v in inferred.items()},
        "layer_norm_eps": cfg.layer_norm_eps,
        "gelu": cfg.gelu,
        "dropout_rate": cfg.dropout_rate,
        "attention_dropout_rate": cfg.attention_dropout_rate,
        **{k: int(v) for k, v in extra.items()},
    }


def bert_example_batch(model_config: dict) -> dict:
    length = min(8, int(model_config["max_position"]))
    ids = np.zeros((1, length), np.int32)  # numpy: eval_shape only needs shapes, no device op
    return {
        "input_ids": ids,
        "segment_ids": ids,
        "input_mask": np.ones_like(ids),
        "masked_lm_positions": np.zeros((1, 1), np.int32),
    }
