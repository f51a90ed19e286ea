"""The extract stage: dumps → pages.jsonl, redirects.tsv, disambiguation.txt (+ the signal that
found each: disambiguation_signals.tsv), stats.json per language.

One pool of worker processes serves every language at once (`extract_dumps`). A dump that can be
cut into chunks (multistream.py: any bz2, plain UTF-8 XML) is read by the workers themselves,
chunk by chunk: decompression, XML and wikitext all run in parallel, and the main process only
schedules and writes. Other dumps (gzip, UTF-16) are read by the main process and their pages
sent to the workers in batches. Each language's results are written in dump order through a
bounded window of tasks in flight: the output does not depend on `num_workers`, and memory stays
flat.

Resumable: after each task's output is written, a progress record (progress.py) is saved in the
output directory. A run killed at any point and started again on the same directory continues
after the last record, and its output equals an uninterrupted run's.

Truncated dumps: the complete pages read before the error are written (stats "truncated": true).
With allow_truncated=False the DumpError is then re-raised; with True it is logged and the
stage returns normally.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import logging
import multiprocessing
import os
import re
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .contract import DISAMBIGUATION_SIGNALS_FILE, EXTRACT_STAT_KEYS
from .dumps import DumpError, DumpReader, Page, dump_error, fragment_pages, open_dump, read_siteinfo
from .multistream import Plan, plan, read_chunk
from .progress import ProgressLog, exit_with
from .titles import normalize_title
from .wikitext import WikitextParser, disambiguation_signal

log = logging.getLogger(__name__)

BATCH_PAGES = 64  # pages per task sent to a worker (dumps read by the main process)
BATCH_CHARS = 2_000_000  # ... or fewer when pages are long
MAX_LOGGED_SKIPS = 5
OUTPUTS = ("pages.jsonl", "redirects.tsv", "disambiguation.txt", DISAMBIGUATION_SIGNALS_FILE)

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


@functools.lru_cache(maxsize=32)  # one per language and process
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



def _new_stats() -> dict:
    return {**dict.fromkeys(EXTRACT_STAT_KEYS, 0), "skipped": {}, "other_namespaces": 0,
            "truncated": False}


def _process_pages(lang: str, namespaces: tuple, pages: list[Page]) -> dict:
    """One task's output: the text of each of OUTPUTS for `pages`,
    their stats, the skipped pages to log, and the last page read."""
    stats = _new_stats()
    del stats["truncated"]
    out = {"redirects": io.StringIO()}
    articles = []
    for page in pages:
        if page.ns != 0:
            stats["other_namespaces"] += 1
            continue
        if _write_redirect(page, lang, out, stats):
            continue
        title = normalize_title(page.title, lang)
        if not title:
            stats["skipped"]["bad_title"] = stats["skipped"].get("bad_title", 0) + 1
            continue
        articles.append((page.id, title, page.text))
    lines, disambiguation, signals, skips = [], [], [], []
    for (page_id, title, _), result in zip(articles, _process_batch(lang, namespaces, articles)):
        kind = result[0]
        if kind == "page":
            lines.append(result[1] + "\n")
            stats["pages"] += 1
            stats["paragraphs"] += result[2]
            stats["links"] += result[3]
        elif kind == "disambiguation":
            disambiguation.append(title + "\n")
            signals.append(f"{title}\t{result[1]}\n")
            stats["disambiguation"] += 1
        else:
            reason = result[1]
            stats["skipped"][reason] = stats["skipped"].get(reason, 0) + 1
            if reason != "empty" and len(skips) < MAX_LOGGED_SKIPS:
                skips.append((page_id, title, reason, result[2]))
    # UTF-8 here, in the worker: the main process only writes the bytes.
    return {"pages.jsonl": "".join(lines).encode("utf-8"),
            "redirects.tsv": out["redirects"].getvalue().encode("utf-8"),
            "disambiguation.txt": "".join(disambiguation).encode("utf-8"),
            DISAMBIGUATION_SIGNALS_FILE: "".join(signals).encode("utf-8"), "stats": stats,
            "skips": skips, "last_page": (pages[-1].id, pages[-1].title) if pages else None}


def _run_task(task: tuple) -> dict:
    """A worker's task: ("chunk", lang, namespaces, dump, mode, chunk): read and parse a chunk of
    the dump; or ("pages", lang, namespaces, pages): parse pages read by the main process."""
    kind, lang, namespaces = task[:3]
    error, resplit = None, False
    if kind == "chunk":
        dump, mode, chunk = task[3:]
        fragment, chunk_error = read_chunk(Path(dump), mode, chunk)
        pages, error = fragment_pages(fragment, dump)
        if error is None and chunk_error is not None:
            error, resplit = str(chunk_error), chunk_error.resplit
    else:
        pages = task[3]
    result = _process_pages(lang, namespaces, pages)
    result.update(error=error, resplit=resplit)
    return result


@dataclass
class ExtractJob:
    """One dump to extract: its language, the output directory, and optionally its multistream
    index (by default the one beside the dump, if any)."""

    dump: Path | str
    lang: str
    out_dir: Path | str
    index: Path | str | None = None


@dataclass
class _Language:
    """The main process's state for one dump being extracted."""

    job: ExtractJob
    dump: Path
    out_dir: Path
    plan: Plan = None
    namespaces: tuple = ()
    files: dict = field(default_factory=dict)
    progress: ProgressLog = None
    stats: dict = field(default_factory=_new_stats)
    tasks_done: int = 0
    logged: int = 0
    last_page: tuple | None = None
    tasks: object = None  # iterator of (task, compressed bytes)
    pending: collections.deque = field(default_factory=collections.deque)
    error: DumpError | None = None
    reader_error: DumpError | None = None
    finished: bool = False

    def start(self, bar) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.namespaces = tuple(sorted(read_siteinfo(self.dump).items()))
        self._open()
        record = self.progress.resume(list(OUTPUTS))
        if record:
            self.stats, self.tasks_done = record["stats"], record["tasks"]
            self.logged, self.last_page = record["logged"], _page(record["last_page"])
            bar.update(record["bytes"])
            log.info("%s: continuing after %d tasks (%d pages) of a previous run", self.dump,
                     self.tasks_done, self.stats["pages"])
        self.files = {name: open(self.out_dir / name, "ab") for name in OUTPUTS}
        self.bytes_done = record["bytes"] if record else 0
        self.tasks = self._chunk_tasks() if self.plan.mode else self._page_tasks()

    def _open(self) -> None:
        stat = self.dump.stat()
        key = {"dump": str(self.dump.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
               "batch": [BATCH_PAGES, BATCH_CHARS], **self.plan.key()}
        self.progress = ProgressLog(self.out_dir, key)

    def _chunk_tasks(self):
        for chunk in self.plan.chunks[self.tasks_done:]:
            task = ("chunk", self.job.lang, self.namespaces, str(self.dump), self.plan.mode, chunk)
            yield task, chunk.end - chunk.start

    def _page_tasks(self):
        """Batches of pages read here (gzip, UTF-16): the first tasks_done batches are read again
        but not sent (their output is already written)."""
        reader = DumpReader(self.dump)
        batch, chars, n, position = [], 0, 0, 0
        try:
            for page in reader:
                batch.append(page)
                chars += len(page.text)
                if len(batch) >= BATCH_PAGES or chars >= BATCH_CHARS:
                    n += 1
                    if n > self.tasks_done:
                        yield ("pages", self.job.lang, self.namespaces, batch), reader.bytes_read - position
                    position = reader.bytes_read
                    batch, chars = [], 0
        except DumpError as e:
            self.reader_error = e  # after the pages read before it
        if batch and n + 1 > self.tasks_done:
            yield ("pages", self.job.lang, self.namespaces, batch), self.dump.stat().st_size - position

    def next_task(self):
        if self.error is not None or self.tasks is None:
            return None
        task = next(self.tasks, None)
        if task is None:
            self.tasks = None
        return task

    def write(self, result: dict, nbytes: int, bar) -> None:
        if self.error is not None:
            return
        if result["error"] and result["resplit"] and self.plan.mode:
            return self._read_sequentially(result["error"], bar)
        for name in OUTPUTS:
            if result[name]:
                self.files[name].write(result[name])
        for key, value in result["stats"].items():
            if key == "skipped":
                for reason, count in value.items():
                    self.stats["skipped"][reason] = self.stats["skipped"].get(reason, 0) + count
            else:
                self.stats[key] += value
        for page_id, title, reason, error in result["skips"]:
            if self.logged < MAX_LOGGED_SKIPS:
                self.logged += 1
                log.warning("%s: skipped page id=%d title=%r: %s %s", self.dump, page_id, title,
                            reason, error)
        self.last_page = result["last_page"] or self.last_page
        self.bytes_done += nbytes
        bar.update(nbytes)
        if result["error"]:
            self.error = dump_error(self.dump, result["error"], self.last_page)
            self._drop_pending()
            return
        self.tasks_done += 1
        self.progress.save(self.files, tasks=self.tasks_done, stats=self.stats, logged=self.logged,
                           last_page=self.last_page, bytes=self.bytes_done)

    def _read_sequentially(self, why: str, bar) -> None:
        """A chunk could not be decoded on its own (e.g. a block marker found by chance inside
        compressed data): start the dump over with the sequential reader, which decides."""
        log.warning("%s: %s; reading it sequentially instead", self.dump, why)
        self._drop_pending()
        bar.update(-self.bytes_done)
        for f in self.files.values():
            f.truncate(0)
        self.plan, self.stats, self.tasks_done, self.logged = Plan(None), _new_stats(), 0, 0
        self.last_page, self.bytes_done = None, 0
        self._open()
        self.progress.clear()
        self.tasks = self._page_tasks()

    def _drop_pending(self) -> None:
        for _, future in self.pending:
            future.cancel()
        self.pending.clear()

    def finish(self) -> None:
        self.finished = True
        self.error = self.error or self.reader_error
        self.stats["truncated"] = self.error is not None
        for f in self.files.values():
            f.close()
        (self.out_dir / "stats.json").write_text(
            json.dumps(self.stats, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        if self.error is None:
            self.progress.clear()


def _page(value) -> tuple | None:
    return tuple(value) if value else None


class _Inline:
    """An executor that runs each task when it is submitted (one worker: no processes)."""

    def submit(self, fn, *args) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _executor(num_workers: int):
    if num_workers <= 1:
        return _Inline()
    # forkserver: workers do not inherit the caller's threads and locks (fork) and start faster
    # than with spawn. A worker that dies (e.g. killed for memory) fails the run with
    # BrokenProcessPool instead of hanging, as multiprocessing.Pool would.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Imported once in the server, not once per worker (~0.5 CPU-s each).
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(num_workers, mp_context=context,
                               initializer=exit_with, initargs=(os.getpid(),))


def extract_dumps(jobs: list[ExtractJob], num_workers: int = 1, allow_truncated: bool = False,
                  progress: bool = True, on_done=None) -> dict[str, dict]:
    """Extract several dumps with one pool of `num_workers` processes, their tasks interleaved;
    returns {lang: stats}. `on_done(job, stats, error)` is called as each dump is finished, its
    output complete in job.out_dir (error: the DumpError of a truncated dump, else None). A
    truncated dump's error is raised at the end (after the other dumps are finished) unless
    allow_truncated; a missing dump fails before any work."""
    for job in jobs:
        open_dump(job.dump).close()  # a missing file fails here, never as a "truncated" dump
    langs = []
    for job in jobs:
        dump = Path(job.dump)
        langs.append(_Language(job, dump, Path(job.out_dir),
                               plan=plan(dump, Path(job.index) if job.index else None)))
    total = sum(lang.dump.stat().st_size for lang in langs)
    bar = tqdm(total=total, unit="B", unit_scale=True, disable=not progress, mininterval=1.0,
               desc="extract " + " ".join(job.lang for job in jobs)[:40])
    executor = _executor(num_workers)
    window = 1 if num_workers <= 1 else 3 * num_workers  # tasks in flight: workers stay busy
    results, first_error = {}, None

    def done(lang: _Language) -> None:
        nonlocal first_error
        lang.finish()
        results[lang.job.lang] = lang.stats
        if lang.error is not None:
            if allow_truncated:
                log.warning("%s — keeping the %d pages read before it (allow_truncated)",
                            lang.error, lang.stats["pages"])
            first_error = first_error or lang.error
        if on_done is not None:
            on_done(lang.job, lang.stats, lang.error)

    try:
        active = []
        for lang in langs:
            try:
                lang.start(bar)
                active.append(lang)
            except DumpError as e:  # not even the <siteinfo> could be read
                lang.error = e
                lang.files = lang.files or {n: open(lang.out_dir / n, "ab") for n in OUTPUTS}
                done(lang)
        while active:
            in_flight = sum(len(lang.pending) for lang in active)
            while in_flight < window:  # one task per language in turn: languages interleave
                submitted = 0
                for lang in active:
                    if in_flight >= window:
                        break
                    task = lang.next_task()
                    if task is not None:
                        lang.pending.append((task[1], executor.submit(_run_task, task[0])))
                        in_flight += 1
                        submitted += 1
                if not submitted:
                    break
            # Only a language's oldest task can be written next: waiting on any other would
            # return at once while it stays done and unwritten (a busy loop stealing a core).
            heads = [lang.pending[0][1] for lang in active if lang.pending]
            if heads:
                wait(heads, return_when=FIRST_COMPLETED)
            for lang in active:
                while lang.pending and lang.pending[0][1].done():
                    nbytes, future = lang.pending.popleft()
                    lang.write(future.result(), nbytes, bar)
                if not lang.pending and (lang.tasks is None or lang.error is not None):
                    done(lang)
            active = [lang for lang in active if not lang.finished]
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        for lang in langs:
            for f in lang.files.values():
                f.close()
        bar.close()
    if first_error is not None and not allow_truncated:
        raise first_error
    return results


def extract_dump(
    dump_path: str | Path,
    lang: str,
    out_dir: str | Path,
    num_workers: int = 1,
    allow_truncated: bool = False,
    progress: bool = True,
    index: str | Path | None = None,
) -> dict:
    """Extract one dump into out_dir; returns the stats (also written to stats.json)."""
    job = ExtractJob(dump_path, lang, out_dir, index)
    return extract_dumps([job], num_workers, allow_truncated, progress)[lang]
