"""The preprocessing pipeline: extract → interwiki → entity_vocab → dataset, then stats.

Each stage writes into a temporary directory that is renamed into place when complete, so
anything that exists under OUT is whole; a rerun skips what exists unless `overwrite=true`.
The extract and dataset stages work in `.partial-<lang>` directories with progress records
instead: a killed run, started again, continues each language where it stopped.
Everything that can be checked before an hour of work is checked first (`validate`, and the
tokenizer is loaded before extraction starts).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from .config import STAGES, WIKIPEDIA_CODE, PreprocessConfig
from .contract import (
    DISAMBIGUATION_SIGNALS,
    DISAMBIGUATION_SIGNALS_KEY,
    SPECIAL_ENTITIES,
    STAT_KEYS,
    DataDir,
    DatasetMetadata,
    MetadataError,
)
from .fsutil import atomic_dir, atomic_file, partial_dir, publish_dir

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
    for key, choices in (("long_mentions", ("truncate", "drop")), ("entity_overflow", ("split", "truncate"))):
        if getattr(cfg.dataset, key) not in choices:
            raise PreprocessError(f"dataset.{key} must be one of {', '.join(choices)}, got "
                                  f"{getattr(cfg.dataset, key)!r}")
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
    _indexes(cfg, languages)
    _check_entity_vocab(cfg, out, languages)
    return languages


def _indexes(cfg: PreprocessConfig, languages: list[str]) -> dict[str, Path]:
    """The multistream indexes given with `indexes={lang: path}` (others are found beside the dumps)."""
    if not cfg.indexes:
        return {}
    if not hasattr(cfg.indexes, "items"):
        raise PreprocessError(f"indexes must map languages to index files, got {cfg.indexes!r}")
    result = {}
    for lang, path in cfg.indexes.items():
        if str(lang) not in languages:
            raise PreprocessError(f"indexes has '{lang}', which is not a key of dumps")
        if not Path(str(path)).is_file():
            raise PreprocessError(f"multistream index for '{lang}' not found: {path}")
        result[str(lang)] = Path(str(path))
    return result


def _check_entity_vocab(cfg: PreprocessConfig, out: Path, languages: list[str]) -> None:
    """A vocabulary that would hold no entities is an error before any work, not a warning
    followed by a dataset of zero examples."""
    data = DataDir(out)
    n = cfg.entity_vocab.min_num_languages
    rebuilt = "entity_vocab" in cfg.stages and (cfg.overwrite or not data.entity_vocab.exists())
    if rebuilt and n > 1:
        if n > len(languages):
            raise PreprocessError(
                f"entity_vocab.min_num_languages={n} but only {len(languages)} language(s) in dumps: "
                f"no entity can qualify; set entity_vocab.min_num_languages={len(languages)} or lower")
        if not cfg.wikidata and not data.interwiki.is_dir():
            raise PreprocessError(
                f"entity_vocab.min_num_languages={n} keeps entities linked in {n}+ languages, which "
                "needs a Wikidata dump to match titles across languages: give wikidata=PATH "
                "(latest-all.json.gz), or set entity_vocab.min_num_languages=1")


def _vocab_has_entities(path: Path) -> None:
    with open(path, encoding="utf-8") as f:
        lines = sum(1 for _, line in zip(range(len(SPECIAL_ENTITIES) + 1), f) if line.strip())
    if lines <= len(SPECIAL_ENTITIES):
        raise PreprocessError(
            f"{path} holds no entities besides [PAD] [UNK] [MASK], so the dataset stage would write no "
            "examples: rebuild it (stages=[entity_vocab] overwrite=true) with wikidata=PATH or a lower "
            "entity_vocab.min_num_languages")


def load_tokenizer_or_fail(name: str):
    """The tokenizer of the dataset stage, or a one-line error (before any work is done)."""
    from .dataset import load_tokenizer

    try:  # a wrong name or path is a one-line error, not a transformers traceback
        return load_tokenizer(name)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PreprocessError(
            f"tokenizer={name} cannot be used: {first} "
            "(give an XLM-R hub name such as xlm-roberta-base, or a local tokenizer directory; "
            "without network, a hub name works only if it is in the local cache)"
        ) from None


def _num_workers(cfg: PreprocessConfig) -> int:
    return cfg.num_workers if cfg.num_workers > 0 else (os.cpu_count() or 1)


def _done(path: Path, cfg: PreprocessConfig) -> bool:
    if path.exists() and not cfg.overwrite:
        log.info("%s exists, skipping (overwrite=true redoes it)", path)
        return True
    return False


def run_extract(cfg: PreprocessConfig, out: Path, languages: list[str]) -> None:
    """All languages in one pool of workers; each language's output is renamed into place as
    soon as it is complete."""
    from .dumps import DumpError
    from .extract import ExtractJob, extract_dumps
    from .progress import RECORD

    data = DataDir(out)
    indexes = _indexes(cfg, languages)
    jobs = []
    for lang in languages:
        final = data.pages(lang)
        if _done(final, cfg):
            continue
        jobs.append(ExtractJob(Path(str(cfg.dumps[lang])), lang, partial_dir(final, fresh=cfg.overwrite),
                               index=indexes.get(lang)))

    def on_done(job: ExtractJob, stats: dict, error) -> None:
        partial = data.truncated_pages(job.lang)
        shutil.rmtree(partial, ignore_errors=True)
        if error is not None and not cfg.allow_truncated:
            # Keep the complete pages read so far, out of later stages' way.
            shutil.copytree(job.out_dir, partial, ignore=shutil.ignore_patterns(RECORD))
            return
        publish_dir(job.out_dir, data.pages(job.lang))

    try:
        extract_dumps(jobs, num_workers=_num_workers(cfg), allow_truncated=cfg.allow_truncated,
                      progress=cfg.progress, on_done=on_done)
    except DumpError as e:
        lang = next(job.lang for job in jobs if Path(job.dump) == e.path)
        raise PreprocessError(
            f"{e} — the pages read before it are kept in {data.truncated_pages(lang)}; "
            "fix the file, or rerun with allow_truncated=true to use what can be read"
        ) from None


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
            if stats["entities"] <= len(SPECIAL_ENTITIES):  # then nothing is written
                raise PreprocessError(
                    f"the entity vocabulary would hold no entities: all {stats['candidates']} linked "
                    f"titles are linked in fewer than entity_vocab.min_num_languages="
                    f"{cfg.entity_vocab.min_num_languages} languages; give wikidata=PATH to match "
                    "titles across languages, or lower entity_vocab.min_num_languages")
    except (WikidataError, FileNotFoundError) as e:
        raise PreprocessError(str(e)) from None
    with atomic_file(data.entity_vocab_stats) as tmp:
        tmp.write_text(json.dumps(stats, indent=1, ensure_ascii=False))


def run_dataset(cfg: PreprocessConfig, out: Path, languages: list[str], tokenizer=None) -> None:
    from .dataset import build_dataset, write_metadata
    from .entity_vocab import EntityVocab

    data = DataDir(out)
    vocab_path = data.entity_vocab
    if not vocab_path.exists():
        raise PreprocessError(f"the dataset stage needs {vocab_path}: run the entity_vocab stage")
    if tokenizer is None:
        tokenizer = load_tokenizer_or_fail(cfg.tokenizer)
    _vocab_has_entities(vocab_path)
    entity_vocab = EntityVocab.load(vocab_path)
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
        work = partial_dir(final, fresh=cfg.overwrite)  # progress, kept if the run is killed
        try:
            with atomic_dir(final) as tmp:
                stats = build_dataset(data.pages(lang), lang, entity_vocab, tokenizer, tmp,
                                      **dataclasses.asdict(cfg.dataset), num_workers=_num_workers(cfg),
                                      progress=cfg.progress, work_dir=work)
                (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
        except FileNotFoundError as e:  # the extract stage's output is missing
            raise PreprocessError(str(e)) from None
        shutil.rmtree(work, ignore_errors=True)


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


class _Beside:
    """A stage run in a process of its own, beside the stages that follow in this one."""

    def __init__(self, stage, cfg: PreprocessConfig, out: Path, languages: list[str]):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.errors = ctx.SimpleQueue()
        self.out = out
        self.process = ctx.Process(target=_run_beside, args=(stage, cfg, out, languages, self.errors),
                                   name=stage.__name__, daemon=True)
        self.process.start()

    def join(self) -> None:
        self.process.join()
        error = (self.errors.get() if not self.errors.empty() else
                 f"{self.process.name} (run beside the extraction) exited with {self.process.exitcode}")
        if error:
            raise PreprocessError(error)

    def stop(self) -> None:
        """End it (the run failed elsewhere); its unfinished output is removed."""
        self.process.terminate()
        self.process.join()
        for tmp in self.out.glob(f".tmp-*-{self.process.pid}"):
            shutil.rmtree(tmp, ignore_errors=True)


def _run_beside(stage, cfg, out, languages, errors) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(processName)s] %(message)s")
    cfg.progress = False  # one progress bar on the terminal: the main process's
    try:
        stage(cfg, out, languages)
        errors.put("")
    except PreprocessError as e:
        errors.put(str(e))
    except BaseException as e:  # reported by the main process, which stops the run
        errors.put(f"{stage.__name__} failed: {type(e).__name__}: {e}")
        raise


def run_pipeline(cfg: PreprocessConfig) -> dict:
    languages = validate(cfg)
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Loaded before extraction: an unusable tokenizer is found in seconds, not after hours.
    tokenizer = load_tokenizer_or_fail(cfg.tokenizer) if "dataset" in cfg.stages else None
    vocab = DataDir(out).entity_vocab
    if tokenizer is not None and vocab.exists() and not ("entity_vocab" in cfg.stages and cfg.overwrite):
        _vocab_has_entities(vocab)
    # The Wikidata dump does not depend on the Wikipedia dumps: read it beside the extraction.
    beside = None
    if {"extract", "interwiki"} <= set(cfg.stages) and cfg.wikidata and not _done(DataDir(out).interwiki, cfg):
        beside = _Beside(run_interwiki, cfg, out, languages)
    try:
        for stage in STAGES:
            if stage not in cfg.stages:
                continue
            log.info("stage %s", stage)
            if stage == "dataset":
                run_dataset(cfg, out, languages, tokenizer=tokenizer)
            elif stage == "interwiki" and beside is not None:
                beside.join()
                beside = None
            else:
                STAGE_FUNCTIONS[stage](cfg, out, languages)
    finally:
        if beside is not None:
            beside.stop()
    stats = collect_stats(out, languages)
    with atomic_file(DataDir(out).stats) as tmp:
        tmp.write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    return stats
