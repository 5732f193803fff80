"""The GPT-2 family: HF `transformers` GPT-2 tensors and config.json <-> tlx GPT (variant gpt2).

HF GPT-2 keeps its projections in `Conv1D` modules whose weights are already [in, out] (the
layout of a Flax Dense kernel), and packs query, key and value into one `c_attn` [D, 3D].
The tlx decoder ties its output logits to the token embedding, as GPT-2 does; an HF
`lm_head.weight` is accepted only as an exact copy of `wte.weight`.

Only the gpt2 variant has an HF equivalent: gpt1 is post-LN with no final LayerNorm.
"""

import logging
import re
from collections.abc import Callable

import ml_collections
import numpy as np

from tlx import models
from tlx.checkpoint import flatten, unflatten
from tlx.convert.common import ConversionError, config_mismatches, problems_error, stack_shape
from tlx.models import gpt

# transformers.GPT2Config defaults, for fields a config.json leaves out.
HF_GPT2_DEFAULTS = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}
# Config fields that change the function HF computes; tlx implements only these values.
HF_GPT2_REQUIRED = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}
# HF activation_function -> tlx gelu; export writes "gelu_new" for the tanh form.
HF_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "erf"}
TLX_GELU = {"tanh": "gelu_new", "erf": "gelu"}
# The causal-mask buffers that checkpoints saved by old transformers versions carry.
HF_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
HF_LM_HEAD = "lm_head.weight"
GPT_MODELS = ("gpt_lm", "gpt_classifier", "gpt_tagger")
# Fields of a task run's "model" section that shape its head (needed to rebuild its tree).
HEAD_KEYS = ("num_classes", "features", "head_hidden", "frozen_encoder")
QKV = ("query", "key", "value")
TABLE_SIZES = ("num_layers", "hidden_size", "intermediate_size", "vocab_size", "max_position")

# (HF key, tlx paths, transform kind, HF shape): c_attn is one HF tensor for three tlx params.
Row = tuple[str, tuple[str, ...], str, tuple[int, ...]]


def _transforms(num_heads: int) -> dict[str, tuple[Callable, Callable]]:
    """kind -> (HF tensor -> tlx params, tlx params -> HF tensor). Conv1D is [in, out]."""
    h = num_heads

    def split_heads(w):  # [..., H*Dh] -> [..., H, Dh]: HF's heads are head-major
        return w.reshape(*w.shape[:-1], h, -1)

    def merge_heads(p):  # [..., H, Dh] -> [..., H*Dh]
        return p.reshape(*p.shape[:-2], -1)

    return {
        "copy": (lambda w: (w,), lambda ps: ps[0]),
        "qkv": (  # [D, 3D] / [3D]: q, k, v side by side <-> 3 x [D, H, Dh] / [H, Dh]
            lambda w: tuple(split_heads(x) for x in np.split(w, 3, axis=-1)),
            lambda ps: np.concatenate([merge_heads(p) for p in ps], axis=-1),
        ),
        "heads_out": (  # [H*Dh, D] <-> [H, Dh, D]
            lambda w: (w.reshape(h, -1, w.shape[-1]),),
            lambda ps: ps[0].reshape(-1, ps[0].shape[-1]),
        ),
    }


def _gpt2_table(s: dict, prefix: str) -> list[Row]:
    """Rows for sizes `s`; HF keys carry `prefix` ('transformer.' in GPT2LMHeadModel files)."""
    d, i = s["hidden_size"], s["intermediate_size"]

    def ln(hf, tlx):
        return [(f"{hf}.weight", (f"{tlx}/scale",), "copy", (d,)),
                (f"{hf}.bias", (f"{tlx}/bias",), "copy", (d,))]  # fmt: skip

    def conv1d(hf, tlx, in_dim, out_dim):
        return [(f"{hf}.weight", (f"{tlx}/kernel",), "copy", (in_dim, out_dim)),
                (f"{hf}.bias", (f"{tlx}/bias",), "copy", (out_dim,))]  # fmt: skip

    rows = [
        ("wte.weight", ("decoder/token_embed/embedding",), "copy", (s["vocab_size"], d)),
        ("wpe.weight", ("decoder/position_embed/embedding",), "copy", (s["max_position"], d)),
    ]
    for n in range(s["num_layers"]):
        hf, tlx = f"h.{n}", f"decoder/layers/layer_{n}"
        attn = f"{tlx}/attention"
        rows += [
            *ln(f"{hf}.ln_1", f"{tlx}/attention_ln"),
            (f"{hf}.attn.c_attn.weight", tuple(f"{attn}/{p}_kernel" for p in QKV), "qkv",
             (d, 3 * d)),
            (f"{hf}.attn.c_attn.bias", tuple(f"{attn}/{p}_bias" for p in QKV), "qkv", (3 * d,)),
            (f"{hf}.attn.c_proj.weight", (f"{attn}/out_kernel",), "heads_out", (d, d)),
            (f"{hf}.attn.c_proj.bias", (f"{attn}/out_bias",), "copy", (d,)),
            *ln(f"{hf}.ln_2", f"{tlx}/mlp_ln"),
            *conv1d(f"{hf}.mlp.c_fc", f"{tlx}/mlp/wi", d, i),
            *conv1d(f"{hf}.mlp.c_proj", f"{tlx}/mlp/wo", i, d),
        ]  # fmt: skip
    rows += ln("ln_f", "decoder/final_ln")
    return [(prefix + hf, *rest) for hf, *rest in rows]


def hf_to_tlx(state_dict: dict, hf_config: dict) -> tuple[dict, dict]:
    """HF GPT-2 tensors + config.json -> (tlx gpt_lm params tree, tlx model config section).

    Handles GPT2Model (no prefix) and GPT2LMHeadModel ("transformer." prefix, `lm_head.weight`
    absent or equal to `wte.weight`) files. Tensors are cast to float32.
    """
    c = {**HF_GPT2_DEFAULTS, **hf_config}
    if c.get("model_type", "gpt2") != "gpt2":
        raise ConversionError(f"config.json model_type={c['model_type']!r}, expected 'gpt2'")
    act = c["activation_function"]
    if act not in HF_GELU:
        raise ConversionError(
            f"config.json activation_function={act!r} has no tlx equivalent; "
            f"supported: {sorted(HF_GELU)}"
        )
    wrong = [f"{k}={c[k]!r} (tlx computes {k}={v!r})" for k, v in HF_GPT2_REQUIRED.items()
             if c[k] != v]  # fmt: skip
    if wrong:
        raise problems_error("config.json asks for attention tlx GPT does not implement", wrong)
    if c["n_embd"] % c["n_head"]:
        raise ConversionError(
            f"config.json n_embd={c['n_embd']} is not divisible by n_head={c['n_head']}"
        )
    if c["embd_pdrop"] != c["resid_pdrop"]:
        logging.warning(
            "config.json embd_pdrop=%s != resid_pdrop=%s; tlx has one dropout_rate: using %s",
            c["embd_pdrop"],
            c["resid_pdrop"],
            c["resid_pdrop"],
        )
    model_config = {
        "name": "gpt_lm",
        "size": "custom",
        "variant": "gpt2",
        "num_layers": int(c["n_layer"]),
        "hidden_size": int(c["n_embd"]),
        "num_heads": int(c["n_head"]),
        "intermediate_size": int(c["n_inner"] or 4 * c["n_embd"]),
        "vocab_size": int(c["vocab_size"]),
        "max_position": int(c["n_positions"]),
        "layer_norm_eps": float(c["layer_norm_epsilon"]),
        "gelu": HF_GELU[act],
        "dropout_rate": float(c["resid_pdrop"]),
        "attention_dropout_rate": float(c["attn_pdrop"]),
    }

    sd = state_dict
    prefix = "transformer." if any(k.startswith("transformer.") for k in sd) else ""
    table = _gpt2_table(model_config, prefix)
    problems = []
    for hf, _, _, shape in table:
        if hf not in sd:
            problems.append(f"{hf} {shape} is missing from the safetensors file")
        elif tuple(sd[hf].shape) != shape:
            problems.append(f"{hf}: file shape {tuple(sd[hf].shape)} != expected {shape}")
    known = {hf for hf, *_ in table}
    for key in sorted(set(sd) - known):
        if key == HF_LM_HEAD:
            wte = prefix + "wte.weight"
            if wte in sd and not np.array_equal(sd[key], sd[wte]):
                problems.append(
                    f"{key} differs from {wte}: the HF output layer is untied; tlx ties the "
                    "logits to the token embedding, so it cannot be converted"
                )
        elif not (key.startswith(prefix) and HF_MASK_BUFFER.fullmatch(key[len(prefix) :])):
            problems.append(f"unexpected tensor {key} {tuple(sd[key].shape)} has no tlx place")
    if problems:
        raise problems_error("cannot convert the HF GPT-2 checkpoint", problems)
    to_tlx = _transforms(model_config["num_heads"])
    flat = {}
    for hf, paths, kind, _ in table:
        parts = to_tlx[kind][0](np.asarray(sd[hf], np.float32))
        flat.update({p: np.ascontiguousarray(x) for p, x in zip(paths, parts, strict=True)})
    return unflatten(flat), model_config


def _require_gpt2(variant: str) -> None:
    if variant != "gpt2":
        raise ConversionError(
            f"model.variant={variant!r} cannot be exported to HF GPT-2: it is post-LN (LayerNorm "
            "after each residual add) with no final LayerNorm, and GPT-2 is pre-LN with ln_f; "
            "only variant='gpt2' has an HF equivalent"
        )


def resolve_gpt_config(model_config: dict):
    """A tlx "model" section (a run's or a converted one) -> its full `gpt.GptConfig`."""
    cfg = ml_collections.ConfigDict(dict(model_config))
    models.entry(cfg.name)  # an unknown name is an error naming the known ones
    return gpt.model_config(cfg)


def _decoder(flat: dict) -> tuple[dict, list[str]]:
    """(the decoder's params under gpt_lm's `decoder/...` paths, the tree's other roots). A task
    model (tlx.models.compose) holds its decoder under `encoder/`, its head under `head/`."""
    root = "encoder" if any(p.startswith("encoder/") for p in flat) else "decoder"
    prefix = root + "/"
    decoder = {"decoder/" + p[len(prefix) :]: x for p, x in flat.items() if p.startswith(prefix)}
    return decoder, sorted({p.split("/")[0] for p in flat} - {root})


def tlx_to_hf(params: dict, model_config: dict) -> dict[str, np.ndarray]:
    """tlx GPT params -> HF tensors (float32, contiguous): a gpt_lm run gives GPT2LMHeadModel
    names ("transformer." prefix; `lm_head.weight` left out, tied, as HF itself saves it), a
    gpt_classifier / gpt_tagger run gives its decoder alone under GPT2Model names (the task
    head has no HF GPT-2 place and is not written)."""
    _require_gpt2(model_config.get("variant", "gpt2"))
    cfg = resolve_gpt_config(model_config)
    sizes = {k: getattr(cfg, k) for k in TABLE_SIZES}
    lm = model_config["name"] == "gpt_lm"
    table = _gpt2_table(sizes, "transformer." if lm else "")
    to_hf = _transforms(cfg.num_heads)
    flat = flatten(params)
    decoder, heads = _decoder(flat)
    if not lm:
        if heads:
            logging.warning("exporting the decoder alone as GPT2Model; not exported: %s", heads)
        flat = decoder
    expected = {p for _, paths, _, _ in table for p in paths}
    problems = [f"tlx parameter {p} is missing" for p in sorted(expected) if p not in flat]
    problems += [f"tlx parameter {p} has no HF name" for p in flat if p not in expected]
    out = {}
    for hf, paths, kind, shape in table:
        if any(p not in flat for p in paths):
            continue
        w = np.ascontiguousarray(to_hf[kind][1]([np.asarray(flat[p], np.float32) for p in paths]))
        if w.shape != shape:
            got = ", ".join(f"{p} {np.shape(flat[p])}" for p in paths)
            problems.append(f"tlx parameter {got} gives {hf} {w.shape} != {shape}")
        out[hf] = w
    if problems:
        raise problems_error("cannot export the tlx GPT params", problems)
    return out


def gpt2_hf_config(params: dict, model_config: dict) -> dict:
    """The HF config.json for the tensors `tlx_to_hf(params, model_config)` writes."""
    _require_gpt2(model_config.get("variant", "gpt2"))
    cfg = resolve_gpt_config(model_config)
    lm = model_config["name"] == "gpt_lm"
    return {
        "architectures": ["GPT2LMHeadModel" if lm else "GPT2Model"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_position,
        "n_embd": cfg.hidden_size,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        # None is HF's spelling of 4 * n_embd; kept so that configs round-trip unchanged.
        "n_inner": None if cfg.intermediate_size == 4 * cfg.hidden_size else cfg.intermediate_size,
        "activation_function": TLX_GELU[cfg.gelu],
        "resid_pdrop": cfg.dropout_rate,
        "embd_pdrop": cfg.dropout_rate,
        "attn_pdrop": cfg.attention_dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
    }


def gpt2_model_config(params: dict, stored: dict | None) -> dict:
    """The "model" section for `params`: shapes from the tensors, the rest (gelu, layer_norm_eps,
    dropout, a task head's fields) from the run's own `stored` section, whose sizes must agree."""
    flat, heads = _decoder(flatten(params))
    inferred = stack_shape(flat, "decoder", "GPT")
    has_head = bool(heads)
    if stored is None:
        if has_head:
            raise ConversionError(
                "the params hold a task head but there is no config.json model section to "
                "rebuild it from; export the run directory"
            )
        # gpt1 is the variant without a final LayerNorm.
        _require_gpt2("gpt2" if "decoder/final_ln/scale" in flat else "gpt1")
        logging.warning("no config.json model section: using tlx defaults for gelu, layer_norm_eps")
        name, extra = "gpt_lm", {}
        cfg = resolve_gpt_config({"name": name, "size": "custom", **inferred})
    else:
        name = stored.get("name")
        if name not in GPT_MODELS:
            raise ConversionError(
                f"config.json model.name={name!r} is not a GPT model; expected one of {GPT_MODELS}"
            )
        if has_head != (name != "gpt_lm"):
            raise ConversionError(
                f"config.json model.name={name!r} but the params "
                f"{'hold' if has_head else 'lack'} a task head"
            )
        _require_gpt2(stored.get("variant", "gpt2"))
        cfg = resolve_gpt_config(stored)
        wrong = config_mismatches(cfg, inferred)
        if wrong:
            raise problems_error("config.json does not describe the checkpoint", wrong)
        extra = {k: stored[k] for k in HEAD_KEYS if k in stored}
    return {
        "name": name,
        "size": "custom",
        "variant": "gpt2",
        **{k: int(v) for k, v in inferred.items()},
        "layer_norm_eps": cfg.layer_norm_eps,
        "gelu": cfg.gelu,
        "dropout_rate": cfg.dropout_rate,
        "attention_dropout_rate": cfg.attention_dropout_rate,
        **extra,
    }


def gpt2_example_batch(model_config: dict) -> dict:
    length = min(8, int(model_config["max_position"]))
    ids = np.zeros((1, length), np.int32)  # numpy: eval_shape only needs shapes, no device op
    return {"input_ids": ids, "input_mask": np.ones_like(ids)}
