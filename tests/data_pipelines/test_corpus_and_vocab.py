"""Corpus reading, document splits, paths and vocabularies on the real data."""

import json
import os

import pytest
import seqio

from data_pipelines import corpus, paths, vocabularies


@pytest.fixture(scope="module")
def docs(data_dir):
    return corpus.read_documents(data_dir)


def test_corpus_documents_per_source(docs):
    by_source = {}
    for d in docs:
        by_source.setdefault(d.doc_id.split("/")[0], []).append(d)
    assert {k: len(v) for k, v in by_source.items()} == {
        "wikitext2": 62,
        "gutenberg": 9,
        "inaugural": 59,
        "state_union": 65,
    }
    wiki = by_source["wikitext2"][0]
    assert wiki.doc_id == "wikitext2/Robert Boulter"
    assert wiki.sentences[0].startswith("Robert Boulter is an English film")
    # Section headings (" = = Career = = ") are neither documents nor sentences.
    assert not any("= =" in s for d in by_source["wikitext2"] for s in d.sentences)
    # The Project Gutenberg licence header is stripped from the books that keep it.
    assert not any("Project Gutenberg" in s for s in by_source["gutenberg"][1].sentences[:50])


def test_sentence_splitter_keeps_abbreviations_and_quotes():
    text = 'Mr. Darcy said "Hello." Then he left! Did he? Yes. J. Smith came.'
    assert corpus.split_sentences(text) == [
        'Mr. Darcy said "Hello."',
        "Then he left!",
        "Did he?",
        "Yes.",
        "J. Smith came.",
    ]


def test_train_validation_split_is_by_document_and_disjoint(docs):
    train = corpus.split_documents(docs, "train")
    valid = corpus.split_documents(docs, "validation")
    train_ids, valid_ids = {d.doc_id for d in train}, {d.doc_id for d in valid}
    assert train_ids.isdisjoint(valid_ids)
    assert train_ids | valid_ids == {d.doc_id for d in docs}
    assert 0 < len(valid) < 0.15 * len(docs)
    assert [d.doc_id for d in corpus.split_documents(docs, "validation")] == [
        d.doc_id for d in valid
    ]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    source = tmp_path / "pretrain" / "inaugural"
    source.mkdir(parents=True)
    good = json.dumps({"id": "a", "text": "One sentence. Two sentences."})
    (source / "inaugural.jsonl").write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(corpus.CorpusFormatError, match=r"inaugural\.jsonl:3"):
        corpus.read_documents(tmp_path, ("inaugural",))


def test_missing_source_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="state_union"):
        corpus.read_documents(tmp_path, ("state_union",))


def test_data_dir_errors_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TLX_DATA_DIR", raising=False)
    with pytest.raises(RuntimeError, match="TLX_DATA_DIR"):
        paths.data_dir()
    monkeypatch.setenv("TLX_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="TLX_DATA_DIR"):
        paths.data_dir()
    assert paths.data_dir(tmp_path) == tmp_path


def test_cache_dir_fallbacks(monkeypatch, tmp_path):
    monkeypatch.delenv("TLX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert paths.cache_dir() == tmp_path / "tlx"
    assert (tmp_path / "tlx").is_dir()


def test_wordpiece_round_trip_and_special_ids():
    vocab = vocabularies.get_vocabulary("bert_uncased")
    assert vocab.vocab_size == 30522
    assert vocabularies.special_ids(vocab) == vocabularies.SpecialIds(0, 100, 101, 102, 103)
    ids = vocab.encode("Hello world, an unaffable Mr. Darcy!")
    assert ids[0] == 7592 and len(ids) > 8  # "hello"; "unaffable" splits into ## pieces
    assert any(vocab.tokens[i].startswith("##") for i in ids)
    assert vocab.decode(ids) == "hello world , an unaffable mr . darcy !"
    assert vocab.encode_tf("hello world").numpy().tolist() == [7592, 2088]
    assert vocabularies.get_vocabulary("bert_uncased") is vocab
    assert vocab == vocabularies.WordPieceVocabulary(vocabularies._bert_uncased_vocab_file)


def test_special_ids_names_missing_token(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    vocab = vocabularies.get_vocabulary(f"wordpiece:{vocab_file}")
    with pytest.raises(KeyError, match=r"\[MASK\]"):
        vocabularies.special_ids(vocab)


def test_sentencepiece_training_on_a_corpus_slice(tmp_path):
    kwargs = dict(sources=("inaugural",), max_sentences=3000)
    model = vocabularies.train_sentencepiece(300, tmp_path, **kwargs)
    mtime = os.stat(model).st_mtime_ns
    assert vocabularies.train_sentencepiece(300, tmp_path, **kwargs) == model
    assert os.stat(model).st_mtime_ns == mtime  # cached, not retrained
    vocab = seqio.SentencePieceVocabulary(str(model))
    assert vocabularies.special_ids(vocab) == vocabularies.SpecialIds(0, 1, 2, 3, 4)
    text = "Fellow citizens of the Senate"
    ids = vocab.encode(text)
    assert 0 not in ids and vocab.decode(ids) == text
