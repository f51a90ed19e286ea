"""Resumable within a language: a run SIGKILLed after a known progress record and started again
continues from there and writes what an uninterrupted run writes (extract, dataset, pipeline)."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from preprocessing import multistream
from preprocessing.extract import extract_dump

ROOT = Path(__file__).resolve().parents[1]
DUMPS = ROOT / "sample" / "dumps"
FILES = ("pages.jsonl", "redirects.tsv", "disambiguation.txt", "stats.json")
KILL = "PREPROCESS_KILL_AFTER_RECORDS"


def killed(code: str, after: int, **kwargs) -> subprocess.CompletedProcess:
    """Run python code that SIGKILLs itself right after its `after`-th progress record."""
    env = dict(os.environ, **{KILL: str(after)}, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=300, **kwargs)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    return result


def enwiki(tmp_path: Path, times: int = 20) -> bytes:
    xml = (DUMPS / "enwiki-sample.xml").read_text(encoding="utf-8")
    head, _, rest = xml.partition("  <page>")
    body = ("  <page>" + rest).rpartition("</mediawiki>")[0]
    return (head + body * times + "</mediawiki>\n").encode("utf-8")


@pytest.mark.parametrize("kind,workers", [("bz2", 2), ("gz", 1)])
def test_extract_killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, kind, workers):
    xml = enwiki(tmp_path)
    dump = tmp_path / f"enwiki.xml.{kind}"
    dump.write_bytes(bz2.compress(xml, compresslevel=1) if kind == "bz2" else gzip.compress(xml))
    monkeypatch.setattr(multistream, "TASK_BYTES", 3000)  # bz2: chunks; gz: batches of 64 pages
    reference = tmp_path / "reference"
    extract_dump(dump, "en", reference, num_workers=workers, progress=False)

    out = tmp_path / "out"
    killed(f"from preprocessing import multistream\nmultistream.TASK_BYTES = 3000\n"
           f"from preprocessing.extract import extract_dump\n"
           f"extract_dump({str(dump)!r}, 'en', {str(out)!r}, num_workers={workers}, progress=False)",
           after=3)
    record = json.loads((out / ".progress.json").read_text())
    assert record["tasks"] == 3 and 0 < record["stats"]["pages"] < 11 * 20
    assert not (out / "stats.json").exists()
    with open(out / "pages.jsonl", "ab") as f:
        f.write(b'{"id": 1, "title": "written after the last record')  # dropped on resume
    stats = extract_dump(dump, "en", out, num_workers=workers, progress=False)
    assert stats["pages"] == 11 * 20 and not (out / ".progress.json").exists()
    for name in FILES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_progress_of_other_settings_is_not_used(tmp_path, monkeypatch):
    dump = tmp_path / "enwiki.xml.bz2"
    dump.write_bytes(bz2.compress(enwiki(tmp_path), compresslevel=1))
    monkeypatch.setattr(multistream, "TASK_BYTES", 3000)
    out = tmp_path / "out"
    killed(f"from preprocessing import multistream\nmultistream.TASK_BYTES = 3000\n"
           f"from preprocessing.extract import extract_dump\n"
           f"extract_dump({str(dump)!r}, 'en', {str(out)!r}, progress=False)", after=2)
    monkeypatch.setattr(multistream, "TASK_BYTES", 5000)  # another cut: the record is void
    reference = tmp_path / "reference"
    extract_dump(dump, "en", reference, progress=False)
    extract_dump(dump, "en", out, progress=False)
    for name in FILES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_dataset_killed_then_resumed_equals_uninterrupted(tmp_path, preprocessed, monkeypatch):
    import preprocessing.dataset as dataset
    from preprocessing.entity_vocab import EntityVocab

    monkeypatch.setattr(dataset, "PAGES_PER_TASK", 2)
    pages, tokenizer = preprocessed / "pages" / "en", preprocessed / "tokenizer"
    vocab = EntityVocab.load(preprocessed / "entity_vocab.jsonl")
    args = dict(max_seq_length=64, keep_unknown_entities=True, progress=False)
    reference = dataset.build_dataset(pages, "en", vocab, str(tokenizer), tmp_path / "reference", **args)

    work, out = tmp_path / "work", tmp_path / "out"
    killed(f"import preprocessing.dataset as d\nd.PAGES_PER_TASK = 2\n"
           f"from preprocessing.entity_vocab import EntityVocab\n"
           f"v = EntityVocab.load({str(preprocessed / 'entity_vocab.jsonl')!r})\n"
           f"d.build_dataset({str(pages)!r}, 'en', v, {str(tokenizer)!r}, {str(out)!r}, "
           f"work_dir={str(work)!r}, max_seq_length=64, keep_unknown_entities=True, progress=False)",
           after=3)
    assert json.loads((work / ".progress.json").read_text())["tasks"] == 3 and not out.exists()
    stats = dataset.build_dataset(pages, "en", vocab, str(tokenizer), out, work_dir=work, **args)
    assert stats == reference and stats["examples"] > 3
    assert (datasets.load_from_disk(str(out)).to_dict()
            == datasets.load_from_disk(str(tmp_path / "reference")).to_dict())
    data = sorted(p.name for p in out.glob("*.arrow"))
    assert data and all((out / n).read_bytes() == (tmp_path / "reference" / n).read_bytes() for n in data)


def test_pipeline_killed_mid_extract_continues(tmp_path, fixture_dumps, preprocessed):
    """launch/preprocess.py killed after a few languages' records: the rerun finishes them, with
    the same pages as an uninterrupted run (the `preprocessed` fixture)."""
    out = tmp_path / "out"
    dumps = "dumps={" + ", ".join(f"{k}: '{v}'" for k, v in fixture_dumps.items()) + "}"
    args = [sys.executable, str(ROOT / "launch" / "preprocess.py"), f"out_dir={out}", dumps,
            "stages=[extract]", "num_workers=2", "progress=false"]
    env = dict(os.environ, **{KILL: "3"})
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    partial = sorted(p.name for p in (out / "pages").iterdir())
    assert any(name.startswith(".partial-") for name in partial), partial
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (out / "pages").iterdir()) == sorted(fixture_dumps)
    for lang in fixture_dumps:
        for name in FILES:
            assert ((out / "pages" / lang / name).read_bytes()
                    == (preprocessed / "pages" / lang / name).read_bytes()), (lang, name)
