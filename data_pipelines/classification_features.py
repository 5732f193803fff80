"""Raw GLUE-named classification examples -> the model's features, and their seqio Features.

Output features (int32, length sequence_length["input_ids"]): input_ids `[CLS] a [SEP]` or
`[CLS] a [SEP] b [SEP]`, input_mask, segment_ids (1 on `b [SEP]`), and the scalar label. With
framing="gpt" the last [SEP] is GPT-1's extract token [MASK]: `[CLS] a [MASK]`,
`[CLS] a [SEP] b [MASK]`; all else is the same.
"""

import seqio
import tensorflow as tf

from data_pipelines import vocabularies


def text_fields(kind: str) -> tuple[str, ...]:
    return ("sentence",) if kind == "sentence" else ("sentence1", "sentence2")


def truncated_pair_lengths(len_a, len_b, budget):
    """Lengths BERT's _truncate_seq_pair leaves: pop from the longer (b on ties) until they fit.

    Closed form: the shorter side is kept whole if it has at most half the budget, else a gets
    ceil(budget / 2) and b floor(budget / 2). Elementwise on int tensors or arrays.
    """
    new_a = tf.minimum(len_a, tf.maximum(budget - len_b, (budget + 1) // 2))
    return new_a, tf.minimum(len_b, budget - new_a)


def _encode_texts(vocab: seqio.Vocabulary, texts: list[tf.Tensor]) -> list[tf.Tensor]:
    """Scalar strings -> their int32 ids, [n_i] each, in one tokenizer call where possible."""
    ids = vocab.encode_tf(tf.stack(texts))
    if isinstance(ids, tf.RaggedTensor):
        return [tf.cast(ids[i], tf.int32) for i in range(len(texts))]
    return [tf.cast(vocab.encode_tf(t), tf.int32) for t in texts]  # a scalar-only vocabulary


def make_encode_preprocessor(vocab_spec: str, kind: str, framing: str = "bert"):
    """Raw GLUE-named fields -> fixed-length input_ids, input_mask, segment_ids, label.

    Per example: tokenizing batches of examples measured no faster here (the ragged framing
    ops cost what the batched tokenizer saves), and this reads as the layout it builds.
    """
    if kind not in ("sentence", "pair"):
        raise ValueError(f"kind must be 'sentence' or 'pair', got {kind!r}")

    def encode(ds: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
        vocab = vocabularies.get_vocabulary(vocab_spec)
        special = vocabularies.special_ids(vocab)
        seq_len = sequence_length["input_ids"]
        if seq_len < (2 if kind == "sentence" else 3):
            raise ValueError(f"sequence length {seq_len} cannot hold the [CLS]/[SEP] frame")
        start, delimiter, end = (tf.constant([i]) for i in vocabularies.frame_ids(vocab, framing))

        # One tokenizer call for both texts of a pair; autograph is off because the tokenizer's
        # graph is large and has no Python control flow on tensors (it halves tracing time).
        @tf.autograph.experimental.do_not_convert
        def fn(ex):
            pieces = _encode_texts(vocab, [ex[k] for k in text_fields(kind)])
            if kind == "sentence":
                ids = tf.concat([start, pieces[0][: seq_len - 2], end], 0)
                segments = tf.zeros_like(ids)
            else:
                a, b = pieces
                n_a, n_b = truncated_pair_lengths(tf.size(a), tf.size(b), seq_len - 3)
                ids = tf.concat([start, a[:n_a], delimiter, b[:n_b], end], 0)
                segments = tf.concat(
                    [tf.zeros([n_a + 2], tf.int32), tf.ones([n_b + 1], tf.int32)], 0
                )
            pad = [[0, seq_len - tf.size(ids)]]
            return {
                "input_ids": tf.ensure_shape(
                    tf.pad(ids, pad, constant_values=special.pad), [seq_len]
                ),
                "input_mask": tf.ensure_shape(tf.pad(tf.ones_like(ids), pad), [seq_len]),
                "segment_ids": tf.ensure_shape(tf.pad(segments, pad), [seq_len]),
                "label": tf.cast(ex["label"], tf.int32),
            }

        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    return encode


def make_tfds_fields_preprocessor(kind: str):
    """TFDS GLUE examples (idx, int64 label, text fields) -> the raw fields the files give.

    GLUE's label order equals ours: sst2 0=negative, mrpc 1=equivalent, rte 0=entailment.
    """
    names = text_fields(kind)

    def fields(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(
            lambda ex: {**{k: ex[k] for k in names}, "label": tf.cast(ex["label"], tf.int32)},
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return fields


def make_task_id_preprocessor(task_id: int):
    def add_task_id(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(lambda ex: {**ex, "task_id": tf.constant(task_id, tf.int32)})

    return add_task_id


def output_features(
    vocab: seqio.Vocabulary, num_classes: int, num_tasks: int | None = None
) -> dict[str, seqio.Feature]:
    def feature(v, rank=1):
        return seqio.Feature(v, add_eos=False, dtype=tf.int32, rank=rank)

    flags = seqio.PassThroughVocabulary(2)
    features = {
        "input_ids": feature(vocab),
        "input_mask": feature(flags),
        "segment_ids": feature(flags),
        "label": feature(seqio.PassThroughVocabulary(num_classes), rank=0),
    }
    if num_tasks is not None:
        features["task_id"] = feature(seqio.PassThroughVocabulary(num_tasks), rank=0)
    return features
