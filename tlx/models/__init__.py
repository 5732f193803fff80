"""Model registry: `build(config.model)` returns the Flax module a config names."""

from typing import TYPE_CHECKING

from tlx.models import bert, contextual, cove, elmo, embeddings, gpt, word_encoders

if TYPE_CHECKING:  # the models themselves need no ml_collections (GPU benchmark images lack it)
    import ml_collections


def build(cfg: "ml_collections.ConfigDict"):
    overrides = {
        k: cfg[k]
        for k in (
            "vocab_size",
            "max_position",
            "dropout_rate",
            "attention_dropout_rate",
            "gelu",
            "dtype",
            "type_vocab_size",
            "layer_norm_eps",
            *bert.SHAPE_KEYS,
        )
        if k in cfg
    }
    bert_cfg = lambda: bert.config_for_size(cfg.size, **overrides)
    task_head = dict(
        features=cfg.get("features", None),
        head_hidden=cfg.get("head_hidden", 0),
        frozen_encoder=cfg.get("frozen_encoder", False),
    )
    task_head = {k: v for k, v in task_head.items() if v is not None}
    if cfg.name == "bert_pretrain":
        return bert.BertForPreTraining(
            bert_cfg(), mlm_all_positions=cfg.get("mlm_all_positions", False)
        )
    if cfg.name == "bert_classifier":
        n = cfg.num_classes
        n = tuple(n) if isinstance(n, list | tuple) else n
        return bert.BertForSequenceClassification(bert_cfg(), num_classes=n, **task_head)
    if cfg.name == "bert_tagger":
        return bert.BertForTokenClassification(bert_cfg(), cfg.num_classes, **task_head)
    if cfg.name.startswith("gpt_"):
        if cfg.get("vocab_size", 0) is None:
            raise ValueError(
                "model.vocab_size is None (= the data vocabulary's size, filled in by "
                "tlx.train); set it to build the model elsewhere"
            )
        overrides.pop("type_vocab_size", None)
        gpt_cfg = gpt.config_for_size(cfg.size, cfg.get("variant", "gpt2"), **overrides)
        if cfg.name == "gpt_lm":
            return gpt.GptForCausalLM(gpt_cfg)
        if cfg.name == "gpt_classifier":
            return gpt.GptForSequenceClassification(gpt_cfg, cfg.num_classes, **task_head)
        if cfg.name == "gpt_tagger":
            return gpt.GptForTokenClassification(gpt_cfg, cfg.num_classes, **task_head)
    if cfg.name in ("word2vec", "glove"):
        if cfg.get("vocab_size") is None:
            raise ValueError("model.vocab_size is None: tlx.train fills it from the corpus")
        if cfg.name == "glove":
            return embeddings.GloVe(cfg.vocab_size, cfg.dim)
        return embeddings.Word2Vec(cfg.vocab_size, cfg.dim, cfg.arch, cfg.window)
    if cfg.name in ("word_classifier", "word_tagger"):
        return word_encoders.build(cfg)
    if cfg.name == "cove_mt":
        if cfg.get("vocab_size") is None or cfg.get("tgt_vocab_size") is None:
            raise ValueError("model.vocab_size / tgt_vocab_size are None: tlx.train fills them")
        shape = {k: v for k, v in cfg.items() if k not in ("name", "vocab_size")}
        return cove.MTLSTM(cove.CoveConfig(src_vocab_size=cfg.vocab_size, **shape))
    if cfg.name == "elmo_lm":
        if cfg.get("vocab_size") is None:
            raise ValueError("model.vocab_size is None: tlx.train fills it from data.vocab")
        shape = {k: v for k, v in cfg.items() if k not in ("name", "size")}
        return elmo.ElmoLM(elmo.config_for_size(cfg.size, **shape))
    if cfg.name in ("contextual_classifier", "contextual_tagger"):
        return contextual.build(cfg)
    raise ValueError(f"unknown model.name {cfg.name!r}; expected one of {MODELS}")


MODELS = (
    "bert_pretrain",
    "bert_classifier",
    "bert_tagger",
    "gpt_lm",
    "gpt_classifier",
    "gpt_tagger",
    "word_classifier",
    "word_tagger",
    "word2vec",
    "glove",
    "cove_mt",
    "elmo_lm",
    "contextual_classifier",
    "contextual_tagger",
)
