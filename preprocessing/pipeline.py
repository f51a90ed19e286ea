"""The preprocessing pipeline: extract → interwiki → entity_vocab → dataset, then stats.

Each stage writes into a temporary directory that is renamed into place when complete, so
anything that exists under OUT is whole; a rerun skips what exists unless `overwrite=true`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .config import STAGES, WIKIPEDIA_CODE, PreprocessConfig
from .contract import (DISAMBIGUATION_SIGNALS, DISAMBIGUATION_SIGNALS_KEY, STAT_KEYS, DataDir,
                       DatasetMetadata, MetadataError)
from .fsutil import atomic_dir, atomic_file

log = logging.getLogger(__name__)


class PreprocessError(Exception):
    """A problem the user must fix; reported as one line, without a traceback."""


def _languages(cfg: PreprocessConfig) -> list[str]:
    if not cfg.dumps:
        raise PreprocessError(
            "no dumps given: pass 'dumps={en: path/enwiki-pages-articles.xml.bz2, ja: ...}'"
        )
    if not hasattr(cfg.dumps, "items"):
        raise PreprocessError(f"dumps must map languages to dump files, got {cfg.dumps!r}")
    unknown = [str(lang) for lang in cfg.dumps if not WIKIPEDIA_CODE.fullmatch(str(lang))]
    if unknown:
        raise PreprocessError(
            f"unknown language key(s) in dumps: {', '.join(unknown)}; expected Wikipedia language "
            "codes, the xx of xx.wikipedia.org (e.g. en, bg, zh-yue)"
        )
    from .wikitext import WIKI_LANGUAGES

    known = set(WIKI_LANGUAGES.split())
    for lang in cfg.dumps:
        if lang not in known:
            log.warning("'%s' is not among the Wikipedias this version knows; using it anyway "
                        "(English namespace names and markup rules where its dump gives none)", lang)
    return [str(lang) for lang in cfg.dumps]


def validate(cfg: PreprocessConfig) -> list[str]:
    """Check everything that can be checked before any work; returns the languages."""
    languages = _languages(cfg)
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        raise PreprocessError(f"unknown stage(s) {bad}; stages are {list(STAGES)}")
    out = Path(cfg.out_dir)
    if "extract" in cfg.stages:
        for lang in languages:
            if cfg.overwrite or not DataDir(out).pages(lang).exists():
                path = Path(str(cfg.dumps[lang]))
                if not path.is_file():
                    raise PreprocessError(f"dump for '{lang}' not found: {path}")
    if "interwiki" in cfg.stages and cfg.wikidata:
        if not Path(cfg.wikidata).is_file():
            raise PreprocessError(f"wikidata dump not found: {cfg.wikidata}")
        from .interwiki import WikidataError, input_format

        try:
            log.info("wikidata: %s (%s)", cfg.wikidata, input_format(cfg.wikidata))
        except WikidataError as e:
            raise PreprocessError(str(e)) from None
    if "dataset" in cfg.stages and not cfg.tokenizer:
        raise PreprocessError(
            "the dataset stage needs tokenizer=NAME_OR_DIR (e.g. tokenizer=xlm-roberta-base)"
        )
    for key in ("size", "min_num_languages", "per_language_size"):
        if getattr(cfg.entity_vocab, key) < 1:
            raise PreprocessError(f"entity_vocab.{key} must be >= 1")
    return languages


def _num_workers(cfg: PreprocessConfig) -> int:
    return cfg.num_workers if cfg.num_workers > 0 else (os.cpu_count() or 1)


def _done(path: Path, cfg: PreprocessConfig) -> bool:
    if path.exists() and not cfg.overwrite:
        log.info("%s exists, skipping (overwrite=true redoes it)", path)
        return True
    return False


def run_extract(cfg: PreprocessConfig, out: Path, languages: list[str]) -> None:
    from .dumps import DumpError
    from .extract import extract_dump

    data = DataDir(out)
    for lang in languages:
        final = data.pages(lang)
        if _done(final, cfg):
            continue
        dump = Path(str(cfg.dumps[lang]))
        partial = data.truncated_pages(lang)
        try:
            with atomic_dir(final) as tmp:
                try:
                    extract_dump(dump, lang, tmp, num_workers=_num_workers(cfg),
                                 allow_truncated=cfg.allow_truncated, progress=cfg.progress)
                except DumpError:
                    # Keep the complete pages read so far, out of later stages' way.
                    shutil.rmtree(partial, ignore_errors=True)
                    shutil.copytree(tmp, partial)
                    raise
        except DumpError as e:
            raise PreprocessError(
                f"{e} — the pages read before it are kept in {partial}; "
                "fix the file, or rerun with allow_truncated=true to use what can be read"
            ) from None
        shutil.rmtree(partial, ignore_errors=True)


def run_interwiki(cfg: PreprocessConfig, out: Path, languages: list[str]) -> None:
    from .interwiki import build_interwiki

    if not cfg.wikidata:
        log.info("no wikidata dump given: entities stay per language")
        return
    final = DataDir(out).interwiki
    if _done(final, cfg):
        return
    from .interwiki import WikidataError

    try:
        with atomic_dir(final) as tmp:
            build_interwiki(cfg.wikidata, languages, tmp, progress=cfg.progress)
    except WikidataError as e:
        raise PreprocessError(str(e)) from None


def run_entity_vocab(cfg: PreprocessConfig, out: Path, languages: list[str]) -> None:
    from .entity_vocab import build_entity_vocab
    from .interwiki import WikidataError

    data = DataDir(out)
    jsonl, flat = data.entity_vocab, data.hf_entity_vocab
    if jsonl.exists() and flat.exists() and not cfg.overwrite:
        log.info("%s exists, skipping (overwrite=true redoes it)", jsonl)
        return
    missing = [lang for lang in languages if not data.pages(lang).is_dir()]
    if missing:
        raise PreprocessError(f"entity_vocab needs the extract stage's output for: {missing}")
    interwiki = data.interwiki if data.interwiki.is_dir() else None
    # The .json is renamed first: the .jsonl, renamed last, marks a complete vocabulary.
    jsonl.unlink(missing_ok=True)
    try:
        with atomic_file(jsonl) as tmp_jsonl, atomic_file(flat) as tmp_flat:
            stats = build_entity_vocab(
                data.pages_root, languages, tmp_jsonl, tmp_flat, interwiki_dir=interwiki,
                size=cfg.entity_vocab.size, min_num_languages=cfg.entity_vocab.min_num_languages,
                per_language_size=cfg.entity_vocab.per_language_size,
                progress=cfg.progress, num_workers=_num_workers(cfg),
            )
    except (WikidataError, FileNotFoundError) as e:
        raise PreprocessError(str(e)) from None
    with atomic_file(data.entity_vocab_stats) as tmp:
        tmp.write_text(json.dumps(stats, indent=1, ensure_ascii=False))


def run_dataset(cfg: PreprocessConfig, out: Path, languages: list[str]) -> None:
    from .dataset import build_dataset, load_tokenizer, write_metadata
    from .entity_vocab import EntityVocab

    data = DataDir(out)
    vocab_path = data.entity_vocab
    if not vocab_path.exists():
        raise PreprocessError(f"the dataset stage needs {vocab_path}: run the entity_vocab stage")
    entity_vocab = EntityVocab.load(vocab_path)
    try:  # a wrong name or path is a one-line error, not a transformers traceback
        tokenizer = load_tokenizer(cfg.tokenizer)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PreprocessError(
            f"tokenizer={cfg.tokenizer} cannot be used: {first} "
            "(give an XLM-R hub name such as xlm-roberta-base, or a local tokenizer directory)"
        ) from None
    root = data.dataset_root

    def drop_stale(new: DatasetMetadata) -> None:
        """Finished languages are reused only if made from the same inputs and limits: the
        tokenizer and the entity vocabulary by content hash, not by name or size."""
        try:
            old = DatasetMetadata.read(out).to_json()
        except MetadataError as e:
            old = {}
            log.warning("%s", e)
        changed = [key for key, value in new.to_json().items()
                   if key not in ("tokenizer", "languages") and old.get(key) != value]
        if changed and root.exists():
            log.warning("%s changed since %s was built: rebuilding it", ", ".join(changed), root)
            shutil.rmtree(root)

    write_metadata(out, tokenizer, cfg.tokenizer, entity_vocab, cfg.dataset, languages,
                   on_change=None if cfg.overwrite else drop_stale)
    for lang in languages:
        final = data.dataset(lang)
        if _done(final, cfg):
            continue
        try:
            with atomic_dir(final) as tmp:
                stats = build_dataset(
                    data.pages(lang), lang, entity_vocab, tokenizer, tmp,
                    max_seq_length=cfg.dataset.max_seq_length,
                    max_entity_length=cfg.dataset.max_entity_length,
                    max_mention_length=cfg.dataset.max_mention_length,
                    min_sentence_length=cfg.dataset.min_sentence_length,
                    keep_unknown_entities=cfg.dataset.keep_unknown_entities,
                    num_workers=_num_workers(cfg), progress=cfg.progress,
                )
                (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
        except FileNotFoundError as e:  # the extract stage's output is missing
            raise PreprocessError(str(e)) from None


STAGE_FUNCTIONS = {
    "extract": run_extract,
    "interwiki": run_interwiki,
    "entity_vocab": run_entity_vocab,
    "dataset": run_dataset,
}

def _disambiguation_signals(out: Path, lang: str, vocab_stats: dict) -> dict:
    """{signal: pages}: the extract stage's counts, and Wikidata's where it gave that signal."""
    path = DataDir(out).disambiguation_signals(lang)
    signals = {}
    if path.exists():
        signals = dict.fromkeys(DISAMBIGUATION_SIGNALS[:-1], 0)
        for line in path.read_text(encoding="utf-8").splitlines():
            signal = line.rpartition("\t")[2]
            signals[signal] = signals.get(signal, 0) + 1
    wikidata = vocab_stats.get("languages", {}).get(lang, {}).get("disambiguation_wikidata")
    if wikidata is not None:
        signals["wikidata"] = wikidata
    return {k: signals[k] for k in DISAMBIGUATION_SIGNALS if k in signals}


def collect_stats(out: Path, languages: list[str]) -> dict:
    """Merge the per-language stats of the extract, entity_vocab and dataset stages."""
    stats = {}
    vocab_stats_path = DataDir(out).entity_vocab_stats
    vocab_stats = json.loads(vocab_stats_path.read_text()) if vocab_stats_path.exists() else {}
    for lang in languages:
        merged: dict = {"skipped": {}}
        for path in (DataDir(out).pages(lang) / "stats.json", DataDir(out).dataset(lang) / "stats.json"):
            if not path.exists():
                continue
            part = json.loads(path.read_text())
            for reason, n in part.pop("skipped", {}).items():
                merged["skipped"][reason] = merged["skipped"].get(reason, 0) + n
            for key, value in part.items():
                if key in ("links", "paragraphs") and key in merged:
                    continue  # the extract stage's count of links/paragraphs is the primary one
                merged[key] = value
        signals = _disambiguation_signals(out, lang, vocab_stats)
        if signals:
            merged[DISAMBIGUATION_SIGNALS_KEY] = signals
            merged["disambiguation"] = merged.get("disambiguation", 0) + signals.get("wikidata", 0)
        stats[lang] = {k: merged.get(k, 0) for k in STAT_KEYS} | {
            k: v for k, v in merged.items() if k not in STAT_KEYS
        }
    return stats


def format_summary(stats: dict) -> str:
    cols = ("pages", "links", "links_in_vocab", "sentences", "examples", "tokens", "entities")
    rows = [("lang",) + cols]
    for lang, s in stats.items():
        rows.append((lang,) + tuple(f"{s.get(c, 0):,}" for c in cols))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)


def run_pipeline(cfg: PreprocessConfig) -> dict:
    languages = validate(cfg)
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage in cfg.stages:
            log.info("stage %s", stage)
            STAGE_FUNCTIONS[stage](cfg, out, languages)
    stats = collect_stats(out, languages)
    with atomic_file(DataDir(out).stats) as tmp:
        tmp.write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    return stats
