"""Task-model configs whose pre-compose parameter trees tests/golden/legacy_task_params.json
holds (written by the classes before tlx.models.compose), and a batch to initialise each."""

import zlib

import jax.numpy as jnp
import numpy as np

_BERT = dict(size="tiny", vocab_size=100, max_position=32)
_GPT = dict(size="tiny", vocab_size=100, max_position=32)
_WORD = dict(vocab_size=30, embed_dim=6, hidden_size=5, filters=4, widths=[2, 3])
_COVE = dict(src_vocab_size=30, tgt_vocab_size=11, embed_dim=6, hidden=4)
_ELMO = dict(
    vocab_size=30, char_dim=4, filters=[[1, 4], [2, 4]], highway_layers=1,
    projection_dim=8, lstm_dim=12,
)  # fmt: skip

CASES = {
    "bert_classifier": {**_BERT, "name": "bert_classifier", "num_classes": 3},
    "bert_classifier_mixture": {**_BERT, "name": "bert_classifier", "num_classes": [2, 3, 1]},
    "bert_classifier_feature": {
        **_BERT,
        "name": "bert_classifier",
        "num_classes": 2,
        "features": "last4_concat",
        "head_hidden": 16,
        "frozen_encoder": True,
        "num_layers": 4,
    },  # fmt: skip
    "bert_tagger": {**_BERT, "name": "bert_tagger", "num_classes": 5},
    "gpt_classifier": {**_GPT, "name": "gpt_classifier", "num_classes": 3},
    "gpt1_classifier": {**_GPT, "name": "gpt_classifier", "num_classes": 3, "variant": "gpt1"},
    "gpt_tagger": {**_GPT, "name": "gpt_tagger", "num_classes": 4, "head_hidden": 8},
    "word_classifier_bag": {**_WORD, "name": "word_classifier", "num_classes": 3, "encoder": "bag"},
    "word_classifier_cnn": {**_WORD, "name": "word_classifier", "num_classes": 3, "encoder": "cnn"},
    "word_classifier_bilstm": {
        **_WORD,
        "name": "word_classifier",
        "num_classes": 2,
        "encoder": "bilstm",
    },  # fmt: skip
    "word_tagger_cnn": {**_WORD, "name": "word_tagger", "num_classes": 4, "encoder": "cnn"},
    "word_tagger_bilstm": {**_WORD, "name": "word_tagger", "num_classes": 4, "encoder": "bilstm"},
    "contextual_classifier_scratch": {
        **_WORD,
        "name": "contextual_classifier",
        "num_classes": 2,
        "encoder": "bilstm",
        "features": "scratch",
    },  # fmt: skip
    "contextual_classifier_cove": {
        **_WORD,
        "name": "contextual_classifier",
        "num_classes": 2,
        "encoder": "bilstm",
        "features": "glove+cove",
        "cove": _COVE,
    },  # fmt: skip
    "contextual_classifier_elmo": {
        **_WORD,
        "name": "contextual_classifier",
        "num_classes": 2,
        "encoder": "bilstm",
        "features": "elmo",
        "elmo": _ELMO,
        "mix": "all",
    },  # fmt: skip
    "contextual_tagger_elmo": {
        **_WORD,
        "name": "contextual_tagger",
        "num_classes": 3,
        "encoder": "bilstm",
        "features": "elmo",
        "elmo": _ELMO,
        "mix": "all",
    },  # fmt: skip
}


def batch_for(cfg: dict, b: int = 2, length: int = 8) -> dict:
    """A batch with every feature the case's model reads (task_id for a mixture)."""
    rng = np.random.default_rng(0)
    vocab = cfg.get("vocab_size", 30)
    batch = {
        "input_ids": jnp.asarray(rng.integers(1, vocab, (b, length)), jnp.int32),
        "segment_ids": jnp.zeros((b, length), jnp.int32),
        "input_mask": jnp.asarray([[1] * length, [1] * (length - 3) + [0] * 3], jnp.int32),
    }
    if isinstance(cfg.get("num_classes"), list):
        batch["task_id"] = jnp.asarray([0, len(cfg["num_classes"]) - 1], jnp.int32)
    if cfg.get("features") == "elmo":
        batch["char_ids"] = jnp.asarray(rng.integers(1, 50, (b, length, 50)), jnp.int32)
    return batch


def fill(paths: dict) -> dict:
    """{path: shape} -> {path: array}: values fixed by the path alone (not by init or RNG), so
    the old and the new tree, migrated onto each other, hold the same numbers."""
    out = {}
    for path, shape in paths.items():
        n = int(np.prod(shape))
        phase = zlib.crc32(path.encode()) % 1000 / 100.0
        values = 0.1 * np.sin(0.37 * np.arange(n) + phase)
        out[path] = jnp.asarray(values.reshape(shape), jnp.float32)
    return out
