"""A vocabulary first used inside a tf.data map must still work eagerly afterwards."""

import tensorflow as tf

from data_pipelines import vocabularies


def test_wordpiece_first_used_in_graph_then_eager(data_dir):
    vocab = vocabularies.WordPieceVocabulary(data_dir / "models/minilm_l6_bert_uncased/vocab.txt")
    ds = tf.data.Dataset.from_tensor_slices(["hello world"]).map(vocab.encode_tf)
    in_graph = next(iter(ds)).numpy().tolist()
    eager = vocab.encode("hello world")
    assert in_graph == eager == [7592, 2088]
