"""Model registry: `build(config.model)` returns the Flax module `config.model.name` names.

Each entry of REGISTRY says how to build the model from its config section, which head it
carries ('sentence' | 'tagging' for the downstream models, tlx.models.compose; None for the
pretraining ones) and how older parameter paths map onto its tree (tlx.models.migrate). A new
model is one entry here (and its file).
"""

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn

from tlx import precision
from tlx.errors import ConfigError
from tlx.models import bert, contextual, cove, elmo, embeddings, gpt, migrate, word_encoders

if TYPE_CHECKING:  # the models themselves need no ml_collections (GPU benchmark images lack it)
    import ml_collections


@dataclasses.dataclass(frozen=True)
class Entry:
    build: Callable[["ml_collections.ConfigDict"], nn.Module]
    head: str | None = None  # 'sentence' (sentence / pair classification) | 'tagging' | None
    renames: migrate.Rules = ()  # older checkpoints' / pretraining runs' paths -> this tree
    remat: bool = False  # honours model.remat (tlx.precision); others accept only 'none'


def _classes(cfg):
    n = cfg.num_classes
    return tuple(n) if isinstance(n, list | tuple) else n


HEAD_OPTIONS = ("features", "head_hidden", "frozen_encoder")  # bert / gpt heads' options


def _task(family, head: str, renames: migrate.Rules, options=(), remat=False) -> Entry:
    """The entry of a family's `classifier` (head 'sentence') or `tagger` ('tagging'), built
    from family.model_config(cfg), model.num_classes and the `options` keys the config sets."""
    task = family.classifier if head == "sentence" else family.tagger

    def build_task(cfg):
        kw = {k: cfg[k] for k in options if cfg.get(k) is not None}
        return task(family.model_config(cfg), _classes(cfg), **kw)

    return Entry(build_task, head, renames, remat)


def _bert_pretrain(cfg):
    return bert.BertForPreTraining(
        bert.model_config(cfg), mlm_all_positions=cfg.get("mlm_all_positions", False)
    )


def _word_vectors(cfg):
    if cfg.get("vocab_size") is None:
        raise ValueError("model.vocab_size is None: tlx.train fills it from the corpus")
    if cfg.name == "glove":
        return embeddings.GloVe(cfg.vocab_size, cfg.dim, **_precision_fields(embeddings.GloVe, cfg))
    kw = _precision_fields(embeddings.Word2Vec, cfg)
    return embeddings.Word2Vec(cfg.vocab_size, cfg.dim, cfg.arch, cfg.window, **kw)


def _precision_fields(module_cls, cfg) -> dict:
    """model.dtype / param_dtype for a module with those fields; a module without them runs
    float32 only (ConfigError if the config asks otherwise)."""
    fields = {f.name for f in dataclasses.fields(module_cls)}
    kw = {}
    for key in ("dtype", "param_dtype"):
        value = cfg.get(key, "float32")
        if key in fields:
            kw[key] = value
        elif value != "float32":
            raise ConfigError(f"model.{key}={value!r}: {module_cls.__name__} runs float32 only")
    return kw


def _cove_mt(cfg):
    if cfg.get("vocab_size") is None or cfg.get("tgt_vocab_size") is None:
        raise ValueError("model.vocab_size / tgt_vocab_size are None: tlx.train fills them")
    shape = {k: v for k, v in cfg.items() if k not in ("name", "vocab_size")}
    return cove.MTLSTM(cove.CoveConfig(src_vocab_size=cfg.vocab_size, **shape))


def _elmo_lm(cfg):
    if cfg.get("vocab_size") is None:
        raise ValueError("model.vocab_size is None: tlx.train fills it from data.vocab")
    shape = {k: v for k, v in cfg.items() if k not in ("name", "size")}
    return elmo.ElmoLM(elmo.config_for_size(cfg.size, **shape))


REGISTRY: dict[str, Entry] = {
    "bert_pretrain": Entry(_bert_pretrain, remat=True),
    "bert_classifier": _task(bert, "sentence", migrate.BERT_TASK, HEAD_OPTIONS, True),
    "bert_tagger": _task(bert, "tagging", migrate.BERT_TASK, HEAD_OPTIONS, True),
    "gpt_lm": Entry(lambda cfg: gpt.GptForCausalLM(gpt.model_config(cfg)), remat=True),
    "gpt_classifier": _task(gpt, "sentence", migrate.GPT_TASK, HEAD_OPTIONS, True),
    "gpt_tagger": _task(gpt, "tagging", migrate.GPT_TASK, HEAD_OPTIONS, True),
    "word_classifier": _task(word_encoders, "sentence", migrate.WORD_TASK),
    "word_tagger": _task(word_encoders, "tagging", migrate.WORD_TASK),
    "word2vec": Entry(_word_vectors),
    "glove": Entry(_word_vectors),
    "cove_mt": Entry(_cove_mt, remat=True),
    "elmo_lm": Entry(_elmo_lm, remat=True),
    "contextual_classifier": _task(contextual, "sentence", migrate.CONTEXTUAL_TASK),
    "contextual_tagger": _task(contextual, "tagging", migrate.CONTEXTUAL_TASK),
}
MODELS = tuple(REGISTRY)


def entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise ValueError(f"unknown model.name {name!r}; expected one of {list(REGISTRY)}")
    return REGISTRY[name]


def build(cfg: "ml_collections.ConfigDict") -> nn.Module:
    policy = precision.parse(cfg)  # ConfigError naming model.dtype / param_dtype / remat
    e = entry(cfg.name)
    if policy.remat != "none" and not e.remat:
        raise ConfigError(
            f"model.remat={policy.remat!r}: model {cfg.name!r} has no rematerialisation; "
            "use 'none' (bert_*, gpt_*, elmo_lm and cove_mt take a policy)"
        )
    return e.build(cfg)


def head_kind(cfg: "ml_collections.ConfigDict") -> str | None:
    """'sentence' (sentence / pair classification), 'tagging', or None (no downstream head)."""
    return entry(cfg.name).head


def num_classes(cfg: "ml_collections.ConfigDict") -> int | tuple[int, ...] | None:
    """The head's classes (a tuple: one head per task of a mixture); None without a head."""
    return _classes(cfg) if head_kind(cfg) else None


def migrate_params(name: str, params: dict) -> dict:
    """A nested params dict of a checkpoint (a task run from before tlx.models.compose, or the
    pretraining run it transfers from) with its paths renamed onto model `name`'s tree."""
    return migrate.migrate_params(entry(name).renames, params)


def migrate_paths(name: str, paths) -> dict[str, str]:
    """{stored path: path in model `name`'s tree} for a checkpoint's params paths."""
    return migrate.rename_map(entry(name).renames, paths)
