"""Reading MediaWiki export dumps: compressions, encodings, namespaces, truncation."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest

from preprocessing.dumps import DumpError, DumpReader, iter_pages

DUMPS = Path(__file__).resolve().parents[1] / "sample" / "dumps"
EN = DUMPS / "enwiki-sample.xml"


def _titles(path) -> list[str]:
    return [p.title for p in iter_pages(path)]


def test_plain_xml_pages_fields_and_namespaces():
    reader = DumpReader(EN)
    pages = list(reader)
    assert [p.id for p in pages] == list(range(10, 27))
    berlin = pages[0]
    assert (berlin.id, berlin.title, berlin.ns, berlin.redirect) == (10, "Berlin", 0, None)
    assert berlin.text.startswith("{{Short description|Capital of Germany}}\n{{Infobox settlement")
    assert berlin.text.endswith("[[ja:ベルリン]]")
    by_title = {p.title: p for p in pages}
    assert by_title["UK"].redirect == "United Kingdom"
    assert by_title["Template:Infobox settlement"].ns == 10
    assert reader.namespaces[6] == "File" and reader.namespaces[14] == "Category"
    assert reader.namespaces[0] == ""
    assert reader.last_page == (26, "Stub")


def test_bz2_multistream_gz_and_utf16_give_the_same_pages(tmp_path):
    xml = EN.read_bytes()
    expected = list(iter_pages(EN))
    # Multistream: the siteinfo+first pages and the rest as two concatenated bz2 streams.
    cut = xml.index(b"  <page>", xml.index(b"<title>Paris</title>") - 100)
    multi = tmp_path / "enwiki-multistream.xml.bz2"
    multi.write_bytes(bz2.compress(xml[:cut]) + bz2.compress(xml[cut:]))
    gz = tmp_path / "enwiki.xml.gz"
    gz.write_bytes(gzip.compress(xml))
    utf16 = tmp_path / "enwiki-utf16.xml"
    utf16.write_bytes(xml.decode("utf-8").encode("utf-16"))  # with BOM
    assert utf16.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    utf8_bom = tmp_path / "enwiki-bom.xml"
    utf8_bom.write_bytes(b"\xef\xbb\xbf" + xml)
    for path in (multi, gz, utf16, utf8_bom):
        assert list(iter_pages(path)) == expected, path


def test_non_ascii_dump_and_other_export_version(tmp_path):
    xml = (DUMPS / "jawiki-sample.xml").read_text(encoding="utf-8")
    old = tmp_path / "ja-0.10.xml"
    old.write_text(xml.replace("export-0.11", "export-0.10"), encoding="utf-8")
    assert _titles(old)[:3] == ["ベルリン", "ドイツ", "東京都"]
    assert _titles(old) == _titles(DUMPS / "jawiki-sample.xml")


def multistream(xml: bytes, pages_per_stream: int = 3) -> list[bytes]:
    """bz2 streams the way Wikimedia's multistream dumps cut them: siteinfo, then N pages each."""
    starts = [i for i in range(len(xml)) if xml.startswith(b"  <page>", i)]
    cuts = [0] + starts[::pages_per_stream] + [len(xml)]
    return [bz2.compress(xml[a:b]) for a, b in zip(cuts, cuts[1:])]


def test_truncated_bz2_names_file_and_last_complete_page(tmp_path):
    streams = multistream(EN.read_bytes())
    path = tmp_path / "enwiki-cut.xml.bz2"
    path.write_bytes(b"".join(streams[:3]) + streams[3][: len(streams[3]) // 2])
    seen = []
    with pytest.raises(DumpError) as info:
        for page in iter_pages(path):
            seen.append(page.id)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "truncated or corrupt compressed data" in message
    last_id, last_title = info.value.last_page
    assert seen and seen[-1] == last_id
    assert f"id={last_id} title={last_title!r}" in message
    assert seen == list(range(10, 16))  # the two complete 3-page streams


def test_truncated_gz_keeps_pages_up_to_the_cut(tmp_path):
    # gzip decompresses up to the last byte; a single-stream bz2 only whole 100-900 KB blocks.
    data = gzip.compress(EN.read_bytes())
    path = tmp_path / "enwiki-cut.xml.gz"
    path.write_bytes(data[: int(len(data) * 0.7)])
    seen = []
    with pytest.raises(DumpError) as info:
        for page in iter_pages(path):
            seen.append(page.title)
    assert seen == ["Berlin", "Germany", "Tokyo", "Japan", "Paris", "France"]
    assert str(info.value) == (
        f"{path}: truncated or corrupt compressed data: Compressed file ended before the "
        "end-of-stream marker was reached (last complete page id=15 title='France')")


def test_corrupt_gz_and_bz2(tmp_path):
    data = bytearray(gzip.compress(EN.read_bytes()))
    data[len(data) // 2: len(data) // 2 + 8] = b"\x00" * 8
    bad_gz = tmp_path / "bad.xml.gz"
    bad_gz.write_bytes(bytes(data))
    bad_bz2 = tmp_path / "bad.xml.bz2"
    bad_bz2.write_bytes(b"BZh9" + b"\x00" * 200)
    for path in (bad_gz, bad_bz2):
        with pytest.raises(DumpError, match=str(path.name)):
            list(iter_pages(path))


def test_xml_ending_mid_page(tmp_path):
    xml = EN.read_text(encoding="utf-8")
    path = tmp_path / "enwiki-mid.xml"
    path.write_text(xml[: xml.index("<title>Tokyo</title>") + 40], encoding="utf-8")
    got = []
    with pytest.raises(DumpError) as info:
        for page in iter_pages(path):
            got.append(page.title)
    assert got == ["Berlin", "Germany"]  # the pages before the cut come out first
    assert info.value.last_page == (11, "Germany")
    assert "malformed or incomplete XML" in str(info.value)
    assert "id=11 title='Germany'" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DumpError, match="dump file not found"):
        list(iter_pages(tmp_path / "nope.xml.bz2"))


def test_memory_is_flat_elements_are_cleared(monkeypatch, tmp_path):
    """The tree under the root never holds more than the pages of one read chunk."""
    import preprocessing.dumps as dumps

    roots = []

    def spy(*args, _original=dumps.iterparse, **kwargs):
        for event, elem in _original(*args, **kwargs):
            if not roots:
                roots.append(elem)
            yield event, elem

    xml = EN.read_text(encoding="utf-8")
    head, _, rest = xml.partition("  <page>")
    body, _, tail = ("  <page>" + rest).rpartition("</mediawiki>")
    big = tmp_path / "big.xml"
    big.write_text(head + body * 200 + "</mediawiki>\n", encoding="utf-8")  # 3.4 MB, 3400 pages
    monkeypatch.setattr(dumps, "iterparse", spy)
    most = n = 0
    for n, _ in enumerate(iter_pages(big), 1):
        most = max(most, len(roots[0]))
    assert n == 17 * 200 and most <= 30
