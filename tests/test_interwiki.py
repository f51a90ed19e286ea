"""Wikidata JSON dump → (lang, title) ↔ QID, on the bundled excerpt (sample/wikidata-sample.json)."""

from __future__ import annotations

import bz2
import gzip
import json
import logging

import pytest

from preprocessing.interwiki import WikidataError, build_interwiki, load_interwiki

LANGS = ["en", "ja", "th", "ar", "hi", "de", "fr", "zh"]

EN = ["Berlin\tQ64", "Germany\tQ183", "Tokyo\tQ1490", "Japan\tQ17", "Paris\tQ90", "France\tQ142",
      "London\tQ84", "United Kingdom\tQ145", "Europe\tQ46", "Capital city\tQ5119"]
JA = ["ベルリン\tQ64", "ドイツ\tQ183", "東京都\tQ1490", "日本\tQ17", "パリ\tQ90", "フランス\tQ142",
      "ロンドン\tQ84", "イギリス\tQ145", "ヨーロッパ\tQ46", "首都\tQ5119"]


def _tsv(path):
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("compress", ["plain", "gz", "bz2"])
def test_sample_all_compressions(tmp_path, wikidata_sample, compress):
    raw = wikidata_sample.read_bytes()
    src = tmp_path / f"latest-all.json{'' if compress == 'plain' else '.' + compress}"
    src.write_bytes({"plain": raw, "gz": gzip.compress(raw), "bz2": bz2.compress(raw)}[compress])
    out = tmp_path / "interwiki"
    out.mkdir()

    stats = build_interwiki(src, LANGS, out, progress=False)

    # 2 properties + 12 items; 10 items have a sitelink to a configured wiki.
    assert (stats["lines"], stats["items"], stats["malformed"], stats["complete"]) == (14, 10, 0, True)
    assert stats["sitelinks"] == {"en": 10, "ja": 10, "th": 10, "ar": 10, "hi": 10, "de": 10, "fr": 10, "zh": 3}
    assert _tsv(out / "en.tsv") == EN
    assert _tsv(out / "ja.tsv") == JA
    # zhwiki only; the zh_yuewiki sitelinks of Q1490 (東京都) and Q19828155 are other sites.
    assert _tsv(out / "zh.tsv") == ["柏林\tQ64", "德国\tQ183", "日本\tQ17"]
    assert json.loads((out / "stats.json").read_text()) == stats


def test_sample_mapping_details(tmp_path, wikidata_sample):
    build_interwiki(wikidata_sample, LANGS, tmp_path, progress=False)
    iw = load_interwiki(tmp_path, LANGS)
    assert len(iw) == 73
    # enwikiquote / simplewiki "Berlin" (Q19828155, listed first) is not enwiki's Berlin.
    assert iw[("en", "Berlin")] == "Q64"
    assert "Q19828155" not in iw.values()
    # Titles are normalized: "United_Kingdom", "capitale", "ロンドン_".
    assert iw[("en", "United Kingdom")] == "Q145"
    assert iw[("fr", "Capitale")] == "Q5119"
    assert iw[("ja", "ロンドン")] == "Q84"
    # Q183's line is ASCII-escaped (\uXXXX, \/) as PHP writes it.
    assert iw[("ja", "ドイツ")] == "Q183"
    assert iw[("de", "Deutschland")] == "Q183"
    # Q46's keys are in another order: its claims (holding other ids) come before "id".
    assert iw[("fr", "Europe")] == "Q46"
    assert iw[("hi", "यूरोप")] == "Q46"
    # Properties, "sitelinks": [] items and sister projects give nothing.
    assert set(iw.values()) == {"Q64", "Q183", "Q1490", "Q17", "Q90", "Q142", "Q84", "Q145", "Q46", "Q5119"}


def test_no_closing_bracket_and_malformed_lines(tmp_path, wikidata_sample, caplog):
    lines = wikidata_sample.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[" and lines[-1] == "]"
    bad = [
        '{"type":"item","id":"Q1","sitelinks":{"enwiki":{"site":"enwiki","title":"Universe"',  # cut short
        "not json at all,",
        '{"type":"item","id":"Q2","sitelinks":"enwiki",',  # sitelinks not an object
        '{"type":"item","id":"Q3","sitelinks":{"enwiki":{"site":"enwiki"}}},',  # no title
    ]
    src = tmp_path / "dump.json"
    src.write_text("\n".join(lines[:2] + bad + lines[2:-1]) + "\n", encoding="utf-8")  # no "]"
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.WARNING):
        stats = build_interwiki(src, ["en"], out, progress=False)
    assert (stats["lines"], stats["items"], stats["malformed"], stats["complete"]) == (18, 10, 4, False)
    assert _tsv(out / "en.tsv") == EN
    assert f"{src} line 3: malformed entity skipped" in caplog.text
    assert "ends without the closing ']'" in caplog.text


@pytest.mark.parametrize("compress", ["gz", "bz2"])
def test_truncated_compressed_file(tmp_path, wikidata_sample, compress):
    # Enough entities that the cut falls well after the first lines.
    lines = wikidata_sample.read_text(encoding="utf-8").splitlines()
    body = [line.rstrip(",") for line in lines[1:-1]] * 150  # > 1 bz2 block (900 kB)
    raw = ("[\n" + ",\n".join(body) + "\n]\n").encode()
    data = gzip.compress(raw) if compress == "gz" else bz2.compress(raw)
    src = tmp_path / f"latest-all.json.{compress}"
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WikidataError) as err:
        build_interwiki(src, ["en"], out, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{src}: truncated or corrupt compressed data after line ")
    last_line = int(message.split("after line ")[1].split()[0])
    assert 0 < last_line < len(body)


def test_corrupt_gzip(tmp_path, wikidata_sample):
    data = bytearray(gzip.compress(wikidata_sample.read_bytes()))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    src = tmp_path / "latest-all.json.gz"
    src.write_bytes(bytes(data))
    with pytest.raises(WikidataError, match=r"truncated or corrupt compressed data after line \d+"):
        build_interwiki(src, ["en"], tmp_path, progress=False)


def test_missing_inputs(tmp_path, wikidata_sample):
    with pytest.raises(WikidataError, match="not found"):
        build_interwiki(tmp_path / "nope.json.gz", ["en"], tmp_path, progress=False)
    build_interwiki(wikidata_sample, ["en"], tmp_path, progress=False)
    with pytest.raises(WikidataError, match=r"ja\.tsv: missing"):
        load_interwiki(tmp_path, ["en", "ja"])


def test_load_keep_and_conflicts(tmp_path, caplog):
    (tmp_path / "en.tsv").write_text("Berlin\tQ64\nParis\tQ90\nBerlin\tQ821244\n", encoding="utf-8")
    (tmp_path / "ja.tsv").write_text("パリ\tQ90\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert load_interwiki(tmp_path, ["en", "ja"]) == {
            ("en", "Berlin"): "Q64", ("en", "Paris"): "Q90", ("ja", "パリ"): "Q90"}
    assert "1 titles listed with several QIDs" in caplog.text
    assert load_interwiki(tmp_path, ["en", "ja"], keep={"en": {"Paris"}}) == {("en", "Paris"): "Q90"}


@pytest.mark.parametrize("setting,tool,suffix,compress", [
    ("PARALLEL_BZIP2", "bzip2", "bz2", bz2.compress),  # lbzip2/pbzip2 decompress the real dump in parallel
    ("PARALLEL_GZIP", "gzip", "gz", gzip.compress),  # igzip/pigz faster than Python's zlib
])
def test_external_decompressor(tmp_path, wikidata_sample, monkeypatch, setting, tool, suffix, compress):
    # the plain bzip2/gzip command takes the same path as the parallel ones here
    monkeypatch.setattr(f"preprocessing.interwiki.{setting}", (tool,))
    src = tmp_path / f"latest-all.json.{suffix}"
    src.write_bytes(compress(wikidata_sample.read_bytes()))
    out = tmp_path / "out"
    out.mkdir()
    assert build_interwiki(src, ["en"], out, progress=False)["complete"]
    assert _tsv(out / "en.tsv") == EN
    lines = [line.rstrip(",") for line in wikidata_sample.read_text(encoding="utf-8").splitlines()]
    data = compress(("[\n" + ",\n".join(lines[1:-1] * 150) + "\n]\n").encode())
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(WikidataError, match=rf"truncated or corrupt compressed data after line [1-9]\d* \({tool}: "):
        build_interwiki(src, ["en"], out, progress=False)


def test_consumer_stopping_early_ends_the_reader(tmp_path, wikidata_sample):
    import threading

    from preprocessing.interwiki import iter_lines

    before = threading.active_count()
    lines = iter_lines(wikidata_sample)
    assert next(lines) == b"["
    lines.close()
    assert threading.active_count() == before


def test_lexemes_properties_urls_badges_and_crlf(tmp_path):
    # Real-dump entity kinds: lexeme senses hold "enwiki"-like keys but no sitelinks; a
    # property has none; sitelinks may carry "url" and badges; lines may end in "\r\n".
    lines = [
        '{"type":"item","id":"Q1","claims":{"P31":[{"mainsnak":{"datavalue":{"value":{"id":"Q5"}}}}]},'
        '"sitelinks":{"enwiki":{"site":"enwiki","title":"Foo","badges":["Q17437796"],'
        '"url":"https://en.wikipedia.org/wiki/Foo"},"jawiki":{"site":"jawiki","title":"フー","badges":[]}}},',
        '{"type":"property","id":"P31","labels":{"en":{"language":"en","value":"instance of"}},"claims":{}},',
        '{"type":"lexeme","id":"L1","lemmas":{},"senses":[{"id":"L1-S1","glosses":{"enwiki":{"value":"x"}}}],"claims":{}},',
        '{"type":"item","id":"Q2","claims":{},"sitelinks":{}},',
    ]
    path = tmp_path / "wd.json"
    path.write_bytes(("[\r\n" + "\r\n".join(lines) + "\r\n]\r\n").encode("utf-8"))
    stats = build_interwiki(path, ["en", "ja"], tmp_path, progress=False)
    assert _tsv(tmp_path / "en.tsv") == ["Foo\tQ1"] and _tsv(tmp_path / "ja.tsv") == ["フー\tQ1"]
    assert stats["items"] == 1 and stats["malformed"] == 0 and stats["complete"]


