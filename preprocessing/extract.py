"""The extract stage: one dump → pages.jsonl, redirects.tsv, disambiguation.txt (+ the signal
that found each: disambiguation_signals.tsv), stats.json.

The main process reads the dump (decompression + XML) and writes the output; worker processes
parse wikitext. Pages go to the workers in batches through a bounded window of pending batches,
collected in submission order: the output order is the dump order whatever `num_workers` is,
and memory stays flat (Pool.imap would read the whole dump ahead of slow workers).

Truncated dumps: the complete pages read before the error are written (stats "truncated": true).
With allow_truncated=False the DumpError is then re-raised; with True it is logged and the
stage returns normally.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from .contract import DISAMBIGUATION_SIGNALS_FILE, EXTRACT_STAT_KEYS
from .dumps import DumpError, DumpReader, Page, open_dump
from .titles import normalize_title
from .wikitext import WikitextParser, disambiguation_signal

log = logging.getLogger(__name__)

BATCH_PAGES = 64  # pages per task sent to a worker
BATCH_CHARS = 2_000_000  # ... or fewer when pages are long
MAX_LOGGED_SKIPS = 5

# Old dumps without <redirect title=...>: the text starts with #REDIRECT (accepted on every wiki)
# or a local form (MediaWiki's Messages*.php).
_REDIRECT = re.compile(
    r"\s*#(?:REDIRECT|WEITERLEITUNG|REDIRECTION|REDIRECCIÓN|REDIRECCION|RINVIA|RINVIO|"
    r"DOORVERWIJZING|PATRZ|PRZEKIERUJ|TAM|REDIRECIONAMENTO|ПЕРЕНАПРАВЛЕНИЕ|ПЕРЕНАПР|転送|"
    r"リダイレクト|重定向|تحويل|अनुप्रेषित|पुनर्निर्देशित|เปลี่ยนทาง|ΑΝΑΚΑΤΕΥΘΥΝΣΗ|OHJAUS|"
    r"UUDELLEENOHJAUS|ALIH|넘겨주기|OMDIRIGERING|YÖNLENDİRME|YÖNLENDIRME|YÖNLENDİR|ĐỔI|"
    r"পুনর্নির্দেশ|దారిమార్పు|ELEKEZA|ПРЕНАСОЧВАНЕ|ВИЖ|ПЕРЕНАПРАВЛЕННЯ|PŘESMĚRUJ)"
    r"\s*:?\s*\[\[([^\]|]+)",
    re.IGNORECASE,
)

@functools.lru_cache(maxsize=4)
def _parser(lang: str, namespaces: tuple[tuple[int, str], ...]) -> WikitextParser:
    return WikitextParser(lang, dict(namespaces))  # one per process, reused for every batch


def _process_batch(lang: str, namespaces: tuple, batch: list[tuple[int, str, str]]) -> list[tuple]:
    """Parse (id, title, text) pages. Returns per page one of ("page", json_line, n_paragraphs,
    n_links), ("disambiguation", signal) or ("skipped", reason, error)."""
    results = []
    parser = _parser(lang, namespaces)
    for page_id, title, text in batch:
        try:
            signal = disambiguation_signal(text, lang, parser.siteinfo)
            if signal:
                results.append(("disambiguation", signal))
                continue
            paragraphs = parser.parse(text)
            if not paragraphs:
                results.append(("skipped", "empty", ""))
                continue
            record = {
                "id": page_id,
                "title": title,
                "paragraphs": [{"text": p.text, "links": [list(link) for link in p.links]}
                               for p in paragraphs],
            }
            n_links = sum(len(p.links) for p in paragraphs)
            line = json.dumps(record, ensure_ascii=False)
            results.append(("page", line, len(paragraphs), n_links))
        except Exception as e:  # one bad page never stops the dump
            results.append(("skipped", f"parse_error:{type(e).__name__}", repr(e)[:200]))
    return results


def _batches(reader: DumpReader, lang: str, out, stats: dict):
    """Main-namespace article pages in batches; redirects are written here directly."""
    batch, chars = [], 0
    try:
        for page in _pages(reader, lang, out, stats):
            batch.append(page)
            chars += len(page[2])
            if len(batch) >= BATCH_PAGES or chars >= BATCH_CHARS:
                yield batch
                batch, chars = [], 0
    except DumpError:
        if batch:
            yield batch  # the complete pages read before the error
        raise
    if batch:
        yield batch


def _pages(reader: DumpReader, lang: str, out, stats: dict):
    for page in reader:
        if page.ns != 0:
            stats["other_namespaces"] += 1
            continue
        if _write_redirect(page, lang, out, stats):
            continue
        title = normalize_title(page.title, lang)
        if not title:
            stats["skipped"]["bad_title"] = stats["skipped"].get("bad_title", 0) + 1
            continue
        yield page.id, title, page.text


def _write_redirect(page: Page, lang: str, out, stats: dict) -> bool:
    target = page.redirect
    if target is None:
        m = _REDIRECT.match(page.text)
        if m is None:
            return False
        target = m.group(1)
    source, target = normalize_title(page.title, lang), normalize_title(target, lang)
    if source and target and source != target:
        out["redirects"].write(f"{source}\t{target}\n")
        stats["redirects"] += 1
    else:
        stats["skipped"]["bad_redirect"] = stats["skipped"].get("bad_redirect", 0) + 1
    return True


def extract_dump(
    dump_path: str | Path,
    lang: str,
    out_dir: str | Path,
    num_workers: int = 1,
    allow_truncated: bool = False,
    progress: bool = True,
) -> dict:
    """Extract one dump into out_dir; returns the stats (also written to stats.json)."""
    dump_path, out_dir = Path(dump_path), Path(out_dir)
    open_dump(dump_path).close()  # a missing file fails here, never as a "truncated" dump
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {**dict.fromkeys(EXTRACT_STAT_KEYS, 0), "skipped": {}, "other_namespaces": 0,
             "truncated": False}
    reader = DumpReader(dump_path)
    size = dump_path.stat().st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"extract {lang}", disable=not progress,
               mininterval=1.0)
    logged = 0
    error: DumpError | None = None
    start = time.perf_counter()
    names = ("pages.jsonl", "redirects.tsv", "disambiguation.txt", DISAMBIGUATION_SIGNALS_FILE)
    files = {name: open(out_dir / name, "w", encoding="utf-8") for name in names}
    out = {"pages": files["pages.jsonl"], "redirects": files["redirects.tsv"],
           "disambiguation": files["disambiguation.txt"]}
    try:
        batches = _batches(reader, lang, out, stats)
        for batch, results in _parse_batches(batches, lang, reader, num_workers):
            for (page_id, title), result in zip(batch, results):
                kind = result[0]
                if kind == "page":
                    out["pages"].write(result[1] + "\n")
                    stats["pages"] += 1
                    stats["paragraphs"] += result[2]
                    stats["links"] += result[3]
                elif kind == "disambiguation":
                    out["disambiguation"].write(title + "\n")
                    files[DISAMBIGUATION_SIGNALS_FILE].write(f"{title}\t{result[1]}\n")
                    stats["disambiguation"] += 1
                else:
                    reason = result[1]
                    stats["skipped"][reason] = stats["skipped"].get(reason, 0) + 1
                    if reason != "empty" and logged < MAX_LOGGED_SKIPS:
                        logged += 1
                        log.warning("%s: skipped page id=%d title=%r: %s %s",
                                    dump_path, page_id, title, reason, result[2])
            bar.update(reader.bytes_read - bar.n)
            bar.set_postfix(pages_s=f"{stats['pages'] / (time.perf_counter() - start):.0f}",
                            refresh=False)
    except DumpError as e:
        error = e
        stats["truncated"] = True
    finally:
        for f in files.values():
            f.close()
        bar.close()
    (out_dir / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=1) + "\n",
                                        encoding="utf-8")
    if error is not None:
        if not allow_truncated:
            raise error
        log.warning("%s — keeping the %d pages read before it (allow_truncated)", error,
                    stats["pages"])
    return stats


def _parse_batches(batches, lang: str, reader: DumpReader, num_workers: int):
    """Yield ([(id, title)], results) per batch, in input order. Namespace names from <siteinfo>
    are known once the first page has been read, so the parser is set up after the first batch."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    namespaces = tuple(sorted(reader.namespaces.items()))
    if num_workers <= 1:
        for batch in itertools.chain([first], batches):
            yield [page[:2] for page in batch], _process_batch(lang, namespaces, batch)
        return
    # forkserver: workers do not inherit the caller's threads and locks (fork) and start faster
    # than with spawn. A worker that dies (e.g. killed for memory) fails the run with
    # BrokenProcessPool instead of hanging, as multiprocessing.Pool would.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method))
    try:
        pending: collections.deque = collections.deque()
        window = 4 * num_workers  # batches in flight: enough to keep workers busy, memory bounded
        batch, error = first, None
        while batch is not None:
            task = pool.submit(_process_batch, lang, namespaces, batch)
            pending.append(([page[:2] for page in batch], task))  # the texts stay with the task
            if len(pending) >= window:
                ids, task = pending.popleft()
                yield ids, task.result()
            try:
                batch = next(batches, None)
            except DumpError as e:  # finish the pages already read, then report
                batch, error = None, e
        while pending:
            ids, task = pending.popleft()
            yield ids, task.result()
        if error is not None:
            raise error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
