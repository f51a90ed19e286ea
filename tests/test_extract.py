"""The extract stage: output files, stats, skips, truncation, determinism across workers."""

from __future__ import annotations

import bz2
import json
import logging
from pathlib import Path

import pytest

from preprocessing.dumps import DumpError
from preprocessing.extract import extract_dump
from preprocessing.wikitext import WikitextParser

DUMPS = Path(__file__).resolve().parents[1] / "sample" / "dumps"
EN = DUMPS / "enwiki-sample.xml"
FILES = ("pages.jsonl", "redirects.tsv", "disambiguation.txt", "stats.json")


def read_pages(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "pages.jsonl").read_text(encoding="utf-8").splitlines()]


def replicated(tmp_path: Path, times: int) -> bytes:
    """The English sample with its pages repeated: several worker batches' worth."""
    xml = EN.read_text(encoding="utf-8")
    head, _, rest = xml.partition("  <page>")
    body = ("  <page>" + rest).rpartition("</mediawiki>")[0]
    return (head + body * times + "</mediawiki>\n").encode("utf-8")


def test_extract_en_sample(tmp_path):
    stats = extract_dump(EN, "en", tmp_path, num_workers=1, progress=False)
    expected = {"pages": 11, "redirects": 3, "disambiguation": 1, "skipped": {"empty": 1},
                "paragraphs": 27, "links": 88, "other_namespaces": 1, "truncated": False}
    assert stats == expected
    assert json.loads((tmp_path / "stats.json").read_text()) == expected
    pages = read_pages(tmp_path)
    assert [p["title"] for p in pages] == [
        "Berlin", "Germany", "Tokyo", "Japan", "Paris", "France", "London", "United Kingdom",
        "Europe", "Capital city", "Broken markup"]
    assert [p["id"] for p in pages] == list(range(10, 20)) + [25]
    assert pages[0]["paragraphs"][3] == {"text": "Tokyo is a sister city of Berlin.",
                                         "links": [[0, 5, "Tokyo"], [11, 22, "Sister city"]]}
    for page in pages:
        for paragraph in page["paragraphs"]:
            for start, end, target in paragraph["links"]:
                assert paragraph["text"][start:end].strip() == paragraph["text"][start:end] != ""
    assert (tmp_path / "redirects.tsv").read_text(encoding="utf-8") == (
        "UK\tUnited Kingdom\nDeutschland\tGermany\nTokyo Metropolis\tTokyo\n")
    assert (tmp_path / "disambiguation.txt").read_text(encoding="utf-8") == "Paris (disambiguation)\n"


@pytest.mark.parametrize("lang,pages,redirects,disambiguation", [
    ("ja", 8, "東京\t東京都\n英国\tイギリス\n", "パリ (曖昧さ回避)\n"),
    ("de", 7, "BRD\tDeutschland\nBundesrepublik Deutschland\tDeutschland\n", "Paris (Begriffsklärung)\n"),
    ("fr", 6, "Ville Lumière\tParis\n", "Paris (homonymie)\n"),
    ("th", 6, "เยอรมนี\tประเทศเยอรมนี\n", "ปารีส (แก้ความกำกวม)\n"),
    ("ar", 5, "المانيا\tألمانيا\n", "باريس (توضيح)\n"),
    ("hi", 5, "पैरिस\tपेरिस\n", "पेरिस (बहुविकल्पी)\n"),
])
def test_extract_other_languages(tmp_path, lang, pages, redirects, disambiguation):
    stats = extract_dump(DUMPS / f"{lang}wiki-sample.xml", lang, tmp_path, num_workers=1, progress=False)
    assert stats["pages"] == pages and stats["other_namespaces"] == 1 and stats["skipped"] == {}
    assert len(read_pages(tmp_path)) == pages
    assert (tmp_path / "redirects.tsv").read_text(encoding="utf-8") == redirects
    assert (tmp_path / "disambiguation.txt").read_text(encoding="utf-8") == disambiguation


def test_two_workers_give_identical_output(tmp_path):
    dump = tmp_path / "enwiki-big.xml.bz2"
    dump.write_bytes(bz2.compress(replicated(tmp_path, 30)))  # 510 pages: many batches
    one = extract_dump(dump, "en", tmp_path / "one", num_workers=1, progress=False)
    two = extract_dump(dump, "en", tmp_path / "two", num_workers=2, progress=False)
    assert one == two and one["pages"] == 11 * 30
    for name in FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


@pytest.mark.parametrize("num_workers", [1, 2])
def test_truncated_dump_keeps_complete_pages(tmp_path, num_workers):
    xml = replicated(tmp_path, 4)
    starts = [i for i in range(len(xml)) if xml.startswith(b"  <page>", i)]
    cuts = [0] + starts[::5] + [len(xml)]  # multistream: 5 pages per bz2 stream
    streams = [bz2.compress(xml[a:b]) for a, b in zip(cuts, cuts[1:])]
    dump = tmp_path / "enwiki-cut.xml.bz2"
    dump.write_bytes(b"".join(streams[:5]) + streams[5][:40])  # 20 complete pages, then garbage
    out = tmp_path / "out"
    with pytest.raises(DumpError) as info:
        extract_dump(dump, "en", out, num_workers=num_workers, progress=False)
    assert str(dump) in str(info.value) and "id=12 title='Tokyo'" in str(info.value)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["truncated"] is True
    # Pages 1-17 of the sample, then Berlin, Germany, Tokyo of the second copy.
    titles = [p["title"] for p in read_pages(out)]
    assert titles[-4:] == ["Broken markup", "Berlin", "Germany", "Tokyo"] and len(titles) == 14
    assert stats["pages"] == 14 and stats["redirects"] == 3 and stats["disambiguation"] == 1

    again = extract_dump(dump, "en", tmp_path / "again", num_workers=num_workers,
                         allow_truncated=True, progress=False)
    assert again == stats
    assert (tmp_path / "again" / "pages.jsonl").read_bytes() == (out / "pages.jsonl").read_bytes()


def test_page_that_breaks_the_parser_is_skipped_and_counted(tmp_path, monkeypatch, caplog):
    original = WikitextParser.parse

    def fragile(self, wikitext):
        if "unclosed template" in wikitext:  # the sample's "Broken markup" page
            raise RecursionError("maximum recursion depth exceeded")
        return original(self, wikitext)

    monkeypatch.setattr(WikitextParser, "parse", fragile)
    with caplog.at_level(logging.WARNING):
        stats = extract_dump(EN, "en", tmp_path, num_workers=1, progress=False)
    assert stats["skipped"] == {"empty": 1, "parse_error:RecursionError": 1}
    assert stats["pages"] == 10
    assert "Broken markup" not in [p["title"] for p in read_pages(tmp_path)]
    assert "id=25 title='Broken markup'" in caplog.text and "parse_error:RecursionError" in caplog.text


def test_missing_dump(tmp_path):
    for allow_truncated in (False, True):
        with pytest.raises(DumpError, match="dump file not found"):
            extract_dump(tmp_path / "missing.xml.bz2", "en", tmp_path / "out",
                         allow_truncated=allow_truncated, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lang,text,target", [
    ("en", "#REDIRECT [[Paris#History]]", "Paris"),
    ("ko", "#넘겨주기 [[서울]]", "서울"),
    ("sv", "#omdirigering [[Stockholm]]", "Stockholm"),
    ("fi", "#OHJAUS [[Helsinki]]", "Helsinki"),
    ("id", "#ALIH [[Jakarta]]", "Jakarta"),
    ("tr", "#YÖNLENDİRME [[İstanbul]]", "İstanbul"),
    ("vi", "#ĐỔI [[Hà Nội]]", "Hà Nội"),
    ("el", "#ΑΝΑΚΑΤΕΥΘΥΝΣΗ [[Αθήνα]]", "Αθήνα"),
    ("ja", "#リダイレクト [[東京]]", "東京"),
])
def test_redirect_without_redirect_element_uses_local_magic_word(lang, text, target):
    import io

    from preprocessing.dumps import Page
    from preprocessing.extract import _write_redirect

    out = {"redirects": io.StringIO()}
    stats = {"redirects": 0, "skipped": {}}
    assert _write_redirect(Page(1, "Source", 0, None, text), lang, out, stats)
    assert out["redirects"].getvalue() == f"Source\t{target}\n"
