"""Model registry: `build(config.model)` returns the Flax module a config names."""

import ml_collections

from tlx.models import bert


def build(cfg: ml_collections.ConfigDict):
    overrides = {
        k: cfg[k]
        for k in (
            "vocab_size",
            "max_position",
            "dropout_rate",
            "attention_dropout_rate",
            "gelu",
            "dtype",
        )
        if k in cfg
    }
    if cfg.name == "bert_pretrain":
        return bert.BertForPreTraining(
            bert.config_for_size(cfg.size, **overrides),
            mlm_all_positions=cfg.get("mlm_all_positions", False),
        )
    if cfg.name == "bert_classifier":
        return bert.BertForSequenceClassification(
            bert.config_for_size(cfg.size, **overrides), num_classes=cfg.num_classes
        )
    raise ValueError(f"unknown model.name {cfg.name!r}; expected bert_pretrain or bert_classifier")
