"""The preprocessing command as a user runs it: end to end, reruns, and bad input."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

ROOT = Path(__file__).resolve().parents[1]


def preprocess(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "preprocess.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def dumps_arg(dumps: dict[str, Path]) -> str:
    return "dumps={" + ", ".join(f"{k}: '{v}'" for k, v in dumps.items()) + "}"


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, fixture_dumps, wikidata_sample):
    """The sample as users have it: bz2 dumps and a gzipped Wikidata dump."""
    root = tmp_path_factory.mktemp("compressed")
    dumps = {}
    for lang, path in fixture_dumps.items():
        dumps[lang] = root / f"{lang}wiki-latest-pages-articles.xml.bz2"
        dumps[lang].write_bytes(bz2.compress(path.read_bytes()))
    wikidata = root / "latest-all.json.gz"
    wikidata.write_bytes(gzip.compress(wikidata_sample.read_bytes()))
    return dumps, wikidata


def test_cli_end_to_end_then_rerun_skips(tmp_path, compressed, tiny_tokenizer):
    dumps, wikidata = compressed
    out = tmp_path / "out"
    args = [f"out_dir={out}", dumps_arg(dumps), f"wikidata={wikidata}",
            f"tokenizer={tiny_tokenizer}", "num_workers=2", "entity_vocab.min_num_languages=2",
            "dataset.max_seq_length=128", "progress=false"]
    result = preprocess(*args)
    assert result.returncode == 0, result.stderr[-3000:]

    stats = json.loads((out / "stats.json").read_text())
    assert sorted(stats) == sorted(dumps)
    for lang, s in stats.items():
        assert s["pages"] > 0 and s["links"] >= s["links_in_vocab"] > 0, lang
        assert s["examples"] > 0 and s["tokens"] > 0 and s["entities"] > 0, lang
        ds = datasets.load_from_disk(str(out / "dataset" / lang))
        assert len(ds) == s["examples"]
        assert set(ds["language"]) == {lang}
    # The summary table is printed with one row per language.
    for lang in dumps:
        assert any(line.strip().startswith(lang) for line in result.stdout.splitlines())

    # Cross-language merge: with min_num_languages=2 every entity has titles in ≥ 2 languages.
    with open(out / "entity_vocab.jsonl", encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    regular = [e for e in entries if e["id"] > 2]
    assert regular and all(len({lang for _, lang in e["entities"]}) >= 2 for e in regular)
    assert [e["id"] for e in entries] == list(range(len(entries)))

    # Nothing temporary is left behind.
    assert not [p for p in out.rglob(".tmp-*")]

    mtime = (out / "entity_vocab.jsonl").stat().st_mtime_ns
    again = preprocess(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "entity_vocab.jsonl").stat().st_mtime_ns == mtime
    assert "skipping" in again.stdout + again.stderr


def test_unknown_key_fails_before_work(tmp_path):
    result = preprocess(f"out_dir={tmp_path / 'o'}", "dumps={en: x.xml}", "entity_vocab.sise=5")
    assert result.returncode != 0
    assert "sise" in result.stderr
    assert not (tmp_path / "o" / "pages").exists()


def test_missing_file_and_unknown_language(tmp_path):
    result = preprocess(f"out_dir={tmp_path}", "dumps={en: /no/such/enwiki.xml.bz2}")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: dump for 'en' not found: /no/such/enwiki.xml.bz2"
    result = preprocess(f"out_dir={tmp_path}", "dumps={english: a.xml}")
    assert result.returncode == 1
    assert "unknown language key(s) in dumps: english" in result.stderr
    assert "Traceback" not in result.stderr


def test_dataset_stage_needs_tokenizer(tmp_path, fixture_dumps):
    result = preprocess(f"out_dir={tmp_path}", dumps_arg(fixture_dumps))
    assert result.returncode == 1
    assert "tokenizer=" in result.stderr


def test_truncated_dump_keeps_pages_read_and_stops_cleanly(tmp_path, fixture_dumps):
    # gzip, unlike one bz2 stream, lets the pages before the cut be read back.
    data = gzip.compress(fixture_dumps["en"].read_bytes())
    dump = tmp_path / "enwiki-truncated.xml.gz"
    dump.write_bytes(data[: int(len(data) * 0.7)])
    out = tmp_path / "out"
    args = [f"out_dir={out}", f"dumps={{en: '{dump}'}}", "stages=[extract]", "progress=false"]
    result = preprocess(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(dump) in lines[0] and "allow_truncated=true" in lines[0]
    assert not (out / "pages" / "en").exists()  # never where a later stage would read it
    kept = (out / "pages" / "en.truncated" / "pages.jsonl").read_text().splitlines()
    assert len(kept) >= 1

    result = preprocess(*args, "allow_truncated=true")
    assert result.returncode == 0, result.stderr
    assert (out / "pages" / "en" / "pages.jsonl").read_text().splitlines() == kept
    assert json.loads((out / "pages" / "en" / "stats.json").read_text())["truncated"] is True
    assert not (out / "pages" / "en.truncated").exists()


def test_unusable_tokenizer_is_a_one_line_error(tmp_path, fixture_dumps):
    specials = ("[PAD]", "[UNK]", "[MASK]")
    (tmp_path / "entity_vocab.jsonl").write_text("".join(
        json.dumps({"id": i, "entities": [[name, "en"]], "count": 0}) + "\n" for i, name in enumerate(specials)))
    missing = tmp_path / "no-such-tokenizer"
    result = preprocess(f"out_dir={tmp_path}", dumps_arg(fixture_dumps), "stages=[dataset]",
                        f"tokenizer={missing}", "progress=false")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert str(missing) in lines[0] and "tokenizer" in lines[0]


def test_dataset_rebuilt_when_its_settings_change(tmp_path, preprocessed, caplog):
    import shutil

    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run_pipeline

    out = tmp_path / "out"
    shutil.copytree(preprocessed, out)
    meta = json.loads((out / "dataset" / "metadata.json").read_text())
    languages = meta["languages"]
    cfg = PreprocessConfig(out_dir=str(out), dumps={lang: "unused" for lang in languages},
                           tokenizer=meta["tokenizer"], stages=["dataset"], num_workers=1, progress=False)
    cfg.dataset.max_seq_length = meta["max_seq_length"]
    before = (out / "dataset" / languages[0] / "stats.json").stat().st_mtime_ns
    run_pipeline(cfg)  # same settings: reused
    assert (out / "dataset" / languages[0] / "stats.json").stat().st_mtime_ns == before

    cfg.dataset.max_seq_length = 32
    run_pipeline(cfg)
    assert "max_seq_length changed" in caplog.text
    assert json.loads((out / "dataset" / "metadata.json").read_text())["max_seq_length"] == 32
    sizes = []
    for lang in languages:
        ds = datasets.load_from_disk(str(out / "dataset" / lang))
        assert all(len(ids) <= 32 for ids in ds["word_ids"])
        sizes.append(len(ds))
    assert sum(sizes) > 0


def test_tokenizer_changed_in_place_rebuilds_the_datasets(tmp_path, preprocessed, tiny_tokenizer, caplog):
    """Datasets are current only for the tokenizer's content: one edited in place (same path, same
    vocabulary size) rebuilds them; the same content under another path does not."""
    import shutil

    from preprocessing.config import PreprocessConfig
    from preprocessing.contract import DatasetMetadata, sha256_file
    from preprocessing.pipeline import run_pipeline

    out, tok = tmp_path / "out", tmp_path / "tok"
    shutil.copytree(preprocessed, out)
    shutil.copytree(tiny_tokenizer, tok)
    before = DatasetMetadata.read(out)
    lang = before.languages[0]
    cfg = PreprocessConfig(out_dir=str(out), dumps={lang: "unused" for lang in before.languages},
                           tokenizer=str(tok), stages=["dataset"], num_workers=1, progress=False)
    cfg.dataset.max_seq_length = before.limits.max_seq_length
    stamp = (out / "dataset" / lang / "stats.json").stat().st_mtime_ns
    run_pipeline(cfg)
    assert (out / "dataset" / lang / "stats.json").stat().st_mtime_ns == stamp

    spec = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))
    pieces = spec["model"]["vocab"]
    (pieces[4][0], pieces[5][0]) = (pieces[5][0], pieces[4][0])  # two frequent pieces swap ids
    (tok / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    old_ids = datasets.load_from_disk(str(out / "dataset" / lang))["word_ids"]
    run_pipeline(cfg)
    after = DatasetMetadata.read(out)
    assert "tokenizer_sha256 changed" in caplog.text
    assert after.tokenizer_vocab_size == before.tokenizer_vocab_size
    assert after.tokenizer_sha256 == sha256_file(out / "tokenizer" / "tokenizer.json") != before.tokenizer_sha256
    assert datasets.load_from_disk(str(out / "dataset" / lang))["word_ids"] != old_ids


# ---------------------------------------------------------------- checked before any work
def _cfg(out, dumps, **kwargs):
    from preprocessing.config import PreprocessConfig

    cfg = PreprocessConfig(out_dir=str(out), dumps={k: str(v) for k, v in dumps.items()},
                           num_workers=1, progress=False)
    for key, value in kwargs.items():
        target, _, name = key.rpartition("__")
        setattr(getattr(cfg, target) if target else cfg, name, value)
    return cfg


def _fails(cfg) -> str:
    from preprocessing.pipeline import PreprocessError, run_pipeline

    with pytest.raises(PreprocessError) as info:
        run_pipeline(cfg)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unusable_hub_tokenizer_stops_before_extraction(tmp_path, fixture_dumps, wikidata_sample):
    message = _fails(_cfg(tmp_path, fixture_dumps, wikidata=str(wikidata_sample),
                          tokenizer="no-such-org/no-such-tokenizer"))
    assert message.startswith("tokenizer=no-such-org/no-such-tokenizer cannot be used:")
    assert "local cache" in message
    assert not (tmp_path / "pages").exists()


def test_vocabulary_that_cannot_hold_entities_stops_before_extraction(tmp_path, fixture_dumps,
                                                                      tiny_tokenizer, wikidata_sample):
    message = _fails(_cfg(tmp_path, fixture_dumps, tokenizer=str(tiny_tokenizer)))
    assert "entity_vocab.min_num_languages=3" in message and "wikidata=PATH" in message
    assert "entity_vocab.min_num_languages=1" in message
    two = {k: fixture_dumps[k] for k in ("en", "ja")}
    message = _fails(_cfg(tmp_path, two, tokenizer=str(tiny_tokenizer), wikidata=str(wikidata_sample)))
    assert message == ("entity_vocab.min_num_languages=3 but only 2 language(s) in dumps: no entity "
                       "can qualify; set entity_vocab.min_num_languages=2 or lower")
    assert not (tmp_path / "pages").exists()


def test_empty_vocabulary_is_an_error_not_zero_examples(tmp_path, fixture_dumps, tiny_tokenizer):
    empty = tmp_path / "empty.json"
    empty.write_text("[\n]\n")  # a Wikidata dump without sitelinks: no title is shared
    two = {k: fixture_dumps[k] for k in ("en", "ja")}
    cfg = _cfg(tmp_path, two, tokenizer=str(tiny_tokenizer), wikidata=str(empty),
               entity_vocab__min_num_languages=2)
    message = _fails(cfg)
    assert message.startswith("the entity vocabulary would hold no entities: all ")
    assert "lower entity_vocab.min_num_languages" in message
    assert not (tmp_path / "entity_vocab.jsonl").exists() and not (tmp_path / "dataset").exists()
    assert (tmp_path / "pages" / "en" / "pages.jsonl").exists()  # finished work is kept

    specials = ("[PAD]", "[UNK]", "[MASK]")  # one written elsewhere: the dataset stage refuses it
    (tmp_path / "entity_vocab.jsonl").write_text("".join(
        json.dumps({"id": i, "entities": [[name, "en"]], "count": 0}) + "\n" for i, name in enumerate(specials)))
    message = _fails(_cfg(tmp_path, two, tokenizer=str(tiny_tokenizer), stages=["dataset"]))
    assert message.startswith(f"{tmp_path / 'entity_vocab.jsonl'} holds no entities")


def test_index_settings_are_checked(tmp_path, fixture_dumps):
    message = _fails(_cfg(tmp_path, fixture_dumps, stages=["extract"], indexes={"xx": "a.txt.bz2"}))
    assert message == "indexes has 'xx', which is not a key of dumps"
    message = _fails(_cfg(tmp_path, fixture_dumps, stages=["extract"], indexes={"en": str(tmp_path / "no")}))
    assert message == f"multistream index for 'en' not found: {tmp_path / 'no'}"


def test_wikidata_is_read_beside_the_extraction_and_its_errors_stop_the_run(tmp_path, fixture_dumps,
                                                                            wikidata_sample):
    data = gzip.compress(wikidata_sample.read_bytes() * 40)
    broken = tmp_path / "latest-all.json.gz"
    broken.write_bytes(data[: len(data) // 2])
    two = {k: fixture_dumps[k] for k in ("en", "ja")}
    cfg = _cfg(tmp_path / "out", two, wikidata=str(broken), stages=["extract", "interwiki"])
    message = _fails(cfg)
    assert message.startswith(f"{broken}: truncated or corrupt compressed data after line")
    assert (tmp_path / "out" / "pages" / "ja" / "pages.jsonl").exists()  # extraction went on
    assert not list((tmp_path / "out").glob(".tmp-*")) and not (tmp_path / "out" / "interwiki").exists()
