"""Parallel reading of dumps: chunks by multistream index, by bz2 blocks and by bytes give the
sequential reader's pages; index faults; truncation; one pool for several languages."""

from __future__ import annotations

import bz2
import json
import logging
from pathlib import Path

import pytest

from preprocessing import multistream
from preprocessing.dumps import DumpError, fragment_pages, iter_pages
from preprocessing.extract import ExtractJob, extract_dump, extract_dumps

DUMPS = Path(__file__).resolve().parents[1] / "sample" / "dumps"
EN = DUMPS / "enwiki-sample.xml"
FILES = ("pages.jsonl", "redirects.tsv", "disambiguation.txt", "stats.json")


def replicated_xml(path: Path = EN, times: int = 1) -> bytes:
    xml = path.read_text(encoding="utf-8")
    head, _, rest = xml.partition("  <page>")
    body = ("  <page>" + rest).rpartition("</mediawiki>")[0]
    return (head + body * times + "</mediawiki>\n").encode("utf-8")


def write_multistream(xml: bytes, path: Path, pages_per_stream: int = 5) -> Path:
    return multistream.write_multistream(xml, path, pages_per_stream)[0]


def chunk_pages(path: Path, task_bytes: int, index=None):
    plan = multistream.plan(path, index=index, task_bytes=task_bytes)
    pages = []
    for chunk in plan.chunks:
        fragment, error = multistream.read_chunk(path, plan.mode, chunk)
        got, what = fragment_pages(fragment, path)
        assert error is None and what is None, (chunk, error, what)
        pages += got
    return plan.mode, pages


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """The English sample 30 times: as multistream + index, as one bz2 stream of 100 kB blocks
    (several blocks), and as plain XML."""
    root = tmp_path_factory.mktemp("dumps")
    xml = replicated_xml(times=30)
    multi = write_multistream(xml, root / "enwiki-multistream.xml.bz2")
    single = root / "enwiki-single.xml.bz2"
    single.write_bytes(bz2.compress(xml, compresslevel=1))
    plain = root / "enwiki-plain.xml"
    plain.write_bytes(xml)
    return {"multi": multi, "single": single, "plain": plain}


@pytest.mark.parametrize("kind,mode", [("multi", "streams"), ("single", "blocks"), ("plain", "xml")])
@pytest.mark.parametrize("task_bytes", [997, 20_000, 10**9])
def test_chunks_give_the_sequential_pages(dumps, kind, mode, task_bytes):
    expected = list(iter_pages(dumps[kind]))
    got_mode, pages = chunk_pages(dumps[kind], task_bytes)
    assert got_mode == mode
    assert pages == expected and len(pages) == 17 * 30


def test_single_stream_has_several_blocks_found_at_bit_level(dumps):
    with open(dumps["single"], "rb") as f:
        bits = multistream._Bits(f, 0)
        marks = []
        pos = bits.next_mark(0, "block")
        while pos is not None:
            marks.append(pos)
            pos = bits.next_mark(pos + 1, "block")
    assert len(marks) >= 4 and marks[0] == 32  # after "BZh1"
    assert any(pos % 8 for pos in marks)  # blocks are not byte-aligned


def test_multistream_without_index_is_cut_by_blocks(dumps, tmp_path):
    copy = tmp_path / "enwiki-noindex.xml.bz2"
    copy.write_bytes(dumps["multi"].read_bytes())
    mode, pages = chunk_pages(copy, 3000)
    assert mode == "blocks" and pages == list(iter_pages(copy))


def test_extract_identical_for_workers_modes_and_chunk_sizes(dumps, tmp_path, monkeypatch):
    reference = None
    for kind in ("multi", "single", "plain"):
        for workers, task_bytes in ((1, 10**9), (3, 4000)):
            monkeypatch.setattr(multistream, "TASK_BYTES", task_bytes)
            out = tmp_path / f"{kind}-{workers}"
            stats = extract_dump(dumps[kind], "en", out, num_workers=workers, progress=False)
            files = {name: (out / name).read_bytes() for name in FILES}
            reference = reference or files
            assert files == reference, (kind, workers)
            assert stats["pages"] == 11 * 30 and not (out / ".progress.json").exists()


def _corrupt_indexes(multi: Path, tmp_path: Path):
    index = multi.with_name(multi.name.replace(".xml.bz2", "-index.txt.bz2"))
    lines = bz2.decompress(index.read_bytes()).decode().splitlines(keepends=True)
    shifted = "".join(f"{int(o) + 1}:{rest}" for o, rest in (line.split(":", 1) for line in lines))
    other = tmp_path / "other"
    other.mkdir()
    other_dump = write_multistream(replicated_xml(times=30), other / "enwiki-multistream.xml.bz2", 7)
    return {
        "wrong offsets": (shifted, "no bz2 stream starts at offset"),
        "truncated": ("".join(lines[: len(lines) // 2]), "it ends before the dump"),
        "another dump": (bz2.decompress(other_dump.with_name(index.name).read_bytes()).decode(),
                         "no bz2 stream starts at offset"),
        "not an index": ("hello\nworld\n", "a line is not offset:page_id:title"),
    }


def test_index_that_does_not_match_is_reported_and_not_used(dumps, tmp_path, caplog):
    expected = list(iter_pages(dumps["multi"]))
    for name, (text, reason) in _corrupt_indexes(dumps["multi"], tmp_path).items():
        bad = tmp_path / f"bad-{name.replace(' ', '-')}-index.txt.bz2"
        bad.write_bytes(bz2.compress(text.encode()))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            mode, pages = chunk_pages(dumps["multi"], 3000, index=bad)
        assert mode == "blocks" and pages == expected, name
        (record,) = caplog.records
        message = record.getMessage()
        assert "\n" not in message and str(bad) in message and str(dumps["multi"]) in message, name
        assert reason in message and message.endswith("reading the dump without it"), name


def test_index_beside_the_dump_is_found_and_used(dumps, caplog):
    with caplog.at_level(logging.WARNING):
        plan = multistream.plan(dumps["multi"], task_bytes=1)
    assert plan.mode == "streams" and plan.index.name == "enwiki-multistream-index.txt.bz2"
    assert len(plan.chunks) == 1 + 17 * 30 // 5 and not caplog.records  # <siteinfo>, then the streams
    assert plan.chunks[0].start == 0 and plan.chunks[-1].end == dumps["multi"].stat().st_size


@pytest.mark.parametrize("with_index", [True, False])
def test_truncated_last_stream_behaves_as_a_truncated_dump(dumps, tmp_path, with_index, monkeypatch):
    import preprocessing.extract as extract

    monkeypatch.setattr(multistream, "TASK_BYTES", 3000)
    data = dumps["multi"].read_bytes()
    cut = tmp_path / "enwiki-multistream.xml.bz2"
    cut.write_bytes(data[: len(data) - 300])  # inside the last stream with pages
    if with_index:
        index = dumps["multi"].with_name("enwiki-multistream-index.txt.bz2")
        cut.with_name(index.name).write_bytes(index.read_bytes())
    outputs = {}
    for name, workers, sequential in (("sequential", 1, True), ("one", 1, False), ("two", 2, False)):
        if sequential:  # as before chunked reading: the sequential reader in the main process
            monkeypatch.setattr(extract, "plan", lambda *args: multistream.Plan(None))
        out = tmp_path / name
        with pytest.raises(DumpError) as info:
            extract_dump(cut, "en", out, num_workers=workers, progress=False)
        monkeypatch.undo()
        outputs[name] = [str(info.value)] + [(out / f).read_text() for f in FILES]
    assert outputs["one"] == outputs["sequential"] == outputs["two"]
    message = outputs["one"][0]
    assert message.startswith(f"{cut}: truncated or corrupt compressed data: Compressed file ended")
    assert json.loads(outputs["one"][-1])["truncated"] is True
    assert outputs["one"][1].count("\n") == 11 * 30 - 1  # the last stream's one article is lost


def test_chunk_that_cannot_be_decoded_alone_falls_back_to_the_sequential_reader(
        dumps, tmp_path, monkeypatch, caplog):
    """A block marker can occur by chance inside compressed data: then the cut is wrong, and the
    dump is read again sequentially (here simulated for one chunk)."""
    import preprocessing.extract as extract

    monkeypatch.setattr(multistream, "TASK_BYTES", 5000)
    reference = tmp_path / "reference"
    extract_dump(dumps["single"], "en", reference, progress=False)
    real = extract.read_chunk

    def fragile(path, mode, chunk):
        if chunk.start == 10_000:
            return b"", multistream.ChunkError("truncated or corrupt compressed data: Invalid data stream",
                                               resplit=True)
        return real(path, mode, chunk)

    monkeypatch.setattr(extract, "read_chunk", fragile)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        extract_dump(dumps["single"], "en", out, progress=False)
    assert "reading it sequentially instead" in caplog.text
    for name in FILES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_all_languages_in_one_pool(tmp_path, monkeypatch):
    """Several dumps share one pool, their chunks interleaved; each output equals the dump's
    own extraction, and each is reported done as soon as it is complete."""
    monkeypatch.setattr(multistream, "TASK_BYTES", 4000)
    jobs, alone = [], {}
    for lang in ("en", "ja", "de", "fr"):
        dump = write_multistream(replicated_xml(DUMPS / f"{lang}wiki-sample.xml", 4),
                                 tmp_path / f"{lang}wiki-multistream.xml.bz2", 3)
        extract_dump(dump, lang, tmp_path / "alone" / lang, progress=False)
        alone[lang] = {name: (tmp_path / "alone" / lang / name).read_bytes() for name in FILES}
        jobs.append(ExtractJob(dump, lang, tmp_path / "pool" / lang))
    finished = []
    stats = extract_dumps(jobs, num_workers=2, progress=False,
                          on_done=lambda job, s, error: finished.append((job.lang, error)))
    assert sorted(finished) == [(lang, None) for lang in ("de", "en", "fr", "ja")]
    for lang in alone:
        assert stats[lang]["pages"] > 0
        for name in FILES:
            assert (tmp_path / "pool" / lang / name).read_bytes() == alone[lang][name], (lang, name)


def test_main_process_sleeps_while_the_oldest_task_runs(dumps, tmp_path, monkeypatch):
    """Later tasks done before the oldest one (which must be written first) must not wake the main
    process again and again: it waited on every task in flight once, spinning a core meant for a worker
    until the oldest finished."""
    import threading
    from concurrent.futures import Future

    from preprocessing import extract

    class HeadLate:  # a pool whose first task finishes 0.5 s after all the others
        def __init__(self):
            self.submitted = 0

        def submit(self, fn, *args):
            future, result = Future(), fn(*args)
            self.submitted += 1
            if self.submitted == 1:
                threading.Timer(0.5, future.set_result, (result,)).start()
            else:
                future.set_result(result)
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    pool, calls, real_wait = HeadLate(), [], extract.wait
    monkeypatch.setattr(extract, "_executor", lambda n: pool)
    monkeypatch.setattr(extract, "wait", lambda fs, **kw: calls.append(1) or real_wait(fs, **kw))
    monkeypatch.setattr(multistream, "TASK_BYTES", 4000)
    extract_dump(dumps["multi"], "en", tmp_path / "pool", num_workers=2, progress=False)
    extract_dump(dumps["multi"], "en", tmp_path / "inline", num_workers=1, progress=False)
    for name in FILES:
        assert (tmp_path / "pool" / name).read_bytes() == (tmp_path / "inline" / name).read_bytes()
    assert pool.submitted > 6 and len(calls) <= pool.submitted + 1  # one wait per written task, not a spin
