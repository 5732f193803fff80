r"""Checkpoint conversion between Hugging Face `transformers` directories and tlx Orbax runs.

  python -m tlx.convert import-hf --model=bert --src=HF_DIR --dst=runs/minilm
  python -m tlx.convert export-hf --model=bert --src=runs/bert_mini --dst=hf/bert_mini
  python -m tlx.convert import-hf --model=gpt2 --src=HF_GPT2_DIR --dst=runs/gpt2_small

import-hf reads HF_DIR/config.json + HF_DIR/model.safetensors (safetensors only: no pickles) and
writes DST/checkpoints/0/{params,meta} (the layout of a training run, so DST works as
`transfer.init_from` for a model whose shape fields match), DST/config.json with the tlx "model"
section (size='custom' plus the shape fields), and DST/vocab.txt if there is one.
export-hf reads the latest step of a run (or a converted dir, or a checkpoints dir) and writes
HF_DIR/model.safetensors + config.json loadable by `from_pretrained(..., use_safetensors=True)`.

Both directions go through one table of (HF name, tlx path, transform) rows per model family, so
the inverse mapping cannot drift from the forward one. Nothing is written unless the converted
tree matches, path for path and shape for shape, the params of the model the config builds; every
missing, extra or wrongly shaped tensor is an error that names it. Outputs are written to a
temporary sibling directory and renamed into place, so a failed conversion leaves no DST.

Families: bert (bert.py) and gpt2 (gpt2.py); another is one more `Family` in `FAMILIES`.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy

from tlx import checkpoint, models
from tlx.checkpoint import flatten, unflatten
from tlx.convert import gpt2
from tlx.convert.bert import (
    bert_example_batch,
    bert_hf_config,
    bert_model_config,
    hf_to_tlx,
    resolve_bert_config,
    tlx_to_hf,
)
from tlx.convert.common import ConversionError, problems_error
from tlx.errors import cli_boundary

__all__ = [
    "ConversionError",
    "FAMILIES",
    "check_tree",
    "export_hf",
    "export_hf_bert",
    "flatten",
    "hf_to_tlx",
    "import_hf",
    "import_hf_bert",
    "read_checkpoint",
    "resolve_bert_config",
    "tlx_to_hf",
    "unflatten",
]


# --- the family registry ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Family:
    """The mapping functions of one model family; import/export below are family-agnostic."""

    hf_to_tlx: Callable[[dict, dict], tuple[dict, dict]]  # (HF tensors, HF config) -> tlx
    tlx_to_hf: Callable[[dict, dict], dict]  # (params, model config) -> HF tensors
    hf_config: Callable[[dict, dict], dict]  # (params, model config) -> HF config.json
    model_config: Callable[[dict, dict | None], dict]  # (params, run's section) -> model config
    example_batch: Callable[[dict], dict]  # model config -> a batch for jax.eval_shape(init)


FAMILIES = {
    "bert": Family(hf_to_tlx, tlx_to_hf, bert_hf_config, bert_model_config, bert_example_batch),
    "gpt2": Family(
        gpt2.hf_to_tlx,
        gpt2.tlx_to_hf,
        gpt2.gpt2_hf_config,
        gpt2.gpt2_model_config,
        gpt2.gpt2_example_batch,
    ),
}


def _family(model: str) -> Family:
    if model not in FAMILIES:
        raise ConversionError(f"unknown --model={model!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[model]


def check_tree(family: Family, params: dict, model_config: dict) -> None:
    """`params` must match, path for path and shape for shape, the params that `model_config`
    builds (abstractly); a top-level head absent from `params` is allowed, the encoder is not."""
    model = models.build(ml_collections.ConfigDict(dict(model_config)))
    batch = family.example_batch(model_config)
    abstract = jax.eval_shape(lambda r: model.init(r, batch), jax.random.PRNGKey(0))
    expected = flatten(nn.unbox(abstract)["params"])
    got = flatten(params)
    present = {p.split("/")[0] for p in got}
    problems = [
        f"{p} {tuple(x.shape)} is missing"
        for p, x in expected.items()
        if p not in got and (p.split("/")[0] in present or p.startswith("encoder/"))
    ]
    for p, x in got.items():
        if p not in expected:
            problems.append(f"{p} {np.shape(x)} is not a parameter of the model")
        elif tuple(np.shape(x)) != tuple(expected[p].shape):
            problems.append(f"{p}: converted {np.shape(x)} != model {tuple(expected[p].shape)}")
    if problems:
        raise problems_error(f"converted params do not fit {model_config['name']}", problems)


# --- files: atomic output directories, Orbax in and out -----------------------------------------


def _check_dst(dst: str, overwrite: bool) -> str:
    dst = os.path.abspath(dst)
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise ConversionError(f"dst {dst} exists and is not a directory")
    if os.path.isdir(dst) and os.listdir(dst) and not overwrite:
        raise ConversionError(f"dst {dst} exists and is not empty; pass --overwrite to replace it")
    return dst


def _remove_stale_tmp(dst: str) -> None:
    """Removes the temporary siblings an interrupted conversion to `dst` left behind (their
    process is gone); a conversion still running in another process is left alone."""
    parent, base = os.path.dirname(dst), os.path.basename(dst)
    for name in os.listdir(parent):
        match = re.fullmatch(rf"\.{re.escape(base)}\.tmp-(\d+)-.*", name)
        if match is None:
            continue
        path = os.path.join(parent, name)
        try:
            os.kill(int(match.group(1)), 0)
            continue  # that conversion is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if name.endswith(".old") and not os.path.exists(dst):
            # Killed while swapping in a replacement: the old dst is this one; put it back.
            print(f"restoring {dst} from {path}, left by an interrupted --overwrite")
            os.rename(path, dst)
            continue
        print(f"removing {path}, left by an interrupted conversion")
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _atomic_dir(dst: str, overwrite: bool):
    """Yields a temporary sibling of `dst`, renamed to `dst` only if the block succeeds."""
    dst = _check_dst(dst, overwrite)
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_tmp(dst)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-{os.getpid()}-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if os.path.exists(dst):
            old = tmp + ".old"
            os.rename(dst, old)
            os.rename(tmp, dst)
            shutil.rmtree(old)
        else:
            os.rename(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_vocab(src_dir: str, dst_dir: str) -> None:
    vocab = os.path.join(src_dir, "vocab.txt")
    if os.path.isfile(vocab):
        shutil.copyfile(vocab, os.path.join(dst_dir, "vocab.txt"))


def _write_orbax(directory: str, params: dict, meta: dict) -> None:
    mngr = checkpoint.manager(
        os.path.join(directory, "checkpoints"), every=1, max_to_keep=None, async_save=False
    )
    meta = {**meta, "digests": checkpoint.tree_digests({"params": params})}
    mngr.save(
        0,
        args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    mngr.wait_until_finished()
    mngr.close()


def read_checkpoint(src: str) -> tuple[dict, dict | None, int]:
    """(params as numpy, the "model" section of the run's config.json or None, step) from the
    latest step under `src`: a run dir, a converted dir, or a checkpoints dir itself."""
    src = os.path.abspath(src)
    ckpt_dir, run_dir = os.path.join(src, "checkpoints"), src
    if not os.path.isdir(ckpt_dir):
        ckpt_dir, run_dir = src, os.path.dirname(src)
    if not os.path.isdir(ckpt_dir):
        raise ConversionError(f"src {src} is not a directory")
    mngr = checkpoint._reader(ckpt_dir)
    steps = mngr.all_steps()
    if not steps:
        raise ConversionError(f"src {src}: no Orbax checkpoint found in {ckpt_dir}")
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])

    def make_targets(metadata):
        return {
            "params": jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype), sharding=cpu),
                metadata["params"],
            )
        }

    found = checkpoint.newest_good(
        mngr, steps, lambda s: checkpoint.read_step(mngr, s, ("params",), make_targets)
    )
    mngr.close()
    if found is None:
        raise ConversionError(
            f"src {src}: every checkpoint in {ckpt_dir} (steps {sorted(steps)}) is damaged"
        )
    step, (restored, _) = found
    restored = restored["params"]
    params = jax.tree.map(np.asarray, restored)
    config_path = os.path.join(run_dir, "config.json")
    stored = None
    if os.path.isfile(config_path):
        with open(config_path) as f:
            stored = json.load(f).get("model")
    return params, stored, step


def import_hf(model: str, src: str, dst: str, overwrite: bool = False) -> dict:
    """HF_DIR -> tlx converted dir; returns the tlx model config section it wrote."""
    family = _family(model)
    _check_dst(dst, overwrite)
    src = os.path.abspath(src)
    for name in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(src, name)):
            raise ConversionError(f"src {src} has no {name} (only safetensors files are read)")
    with open(os.path.join(src, "config.json")) as f:
        hf_config = json.load(f)
    state_dict = safetensors.numpy.load_file(os.path.join(src, "model.safetensors"))
    params, model_config = family.hf_to_tlx(state_dict, hf_config)
    check_tree(family, params, model_config)
    meta = {"step": 0, "source": src, "converted_from": f"hf_{model}"}
    with _atomic_dir(dst, overwrite) as tmp:
        _write_orbax(tmp, params, meta)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"model": model_config}, f, indent=2)
        _copy_vocab(src, tmp)
    return model_config


def export_hf(model: str, src: str, dst: str, overwrite: bool = False) -> dict:
    """tlx run / converted dir -> HF_DIR; returns the HF config.json it wrote."""
    family = _family(model)
    _check_dst(dst, overwrite)
    src = os.path.abspath(src)
    params, stored, _ = read_checkpoint(src)
    if stored and stored.get("name") in models.REGISTRY:  # paths older than tlx.models.compose
        params = models.migrate_params(stored["name"], params)
    model_config = family.model_config(params, stored)
    check_tree(family, params, model_config)
    tensors = family.tlx_to_hf(params, model_config)
    hf_config = family.hf_config(params, model_config)
    run_dir = src if os.path.isdir(os.path.join(src, "checkpoints")) else os.path.dirname(src)
    with _atomic_dir(dst, overwrite) as tmp:
        weights = os.path.join(tmp, "model.safetensors")
        # HF's loader requires the "format" metadata; safetensors creates the file owner-only.
        safetensors.numpy.save_file(tensors, weights, metadata={"format": "pt"})
        os.chmod(weights, 0o644)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        _copy_vocab(run_dir, tmp)
    return hf_config


def import_hf_bert(src: str, dst: str, overwrite: bool = False) -> dict:
    return import_hf("bert", src, dst, overwrite)


def export_hf_bert(src: str, dst: str, overwrite: bool = False) -> dict:
    return export_hf("bert", src, dst, overwrite)


# --- command line -------------------------------------------------------------------------------


@cli_boundary
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tlx.convert", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("import-hf", "HF_DIR (config.json + model.safetensors) -> tlx converted dir"),
        ("export-hf", "tlx run / converted / checkpoints dir -> HF_DIR"),
    ):
        p = sub.add_parser(command, help=text)
        p.add_argument("--model", required=True, choices=sorted(FAMILIES))
        p.add_argument("--src", required=True)
        p.add_argument("--dst", required=True)
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty --dst")
    args = parser.parse_args(argv)
    run = import_hf if args.command == "import-hf" else export_hf
    out = run(args.model, args.src, args.dst, args.overwrite)
    print(f"wrote {os.path.abspath(args.dst)}:\n{json.dumps(out, indent=2)}")
