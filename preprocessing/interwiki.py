"""Wikidata JSON dump → (language, title) ↔ QID, for the configured Wikipedias.

The dump (`latest-all.json.gz` / `.bz2` / plain) is one JSON array with one entity per line:
a "[" line, then `{...},` lines, then "]" (the final "]" may be missing). Most of the
~100M lines are large and hold no sitelink to our wikis, so a line is never fully parsed:
a substring test for the wanted site keys rejects it, and only the `"sitelinks"` object of
the remaining ones is decoded (`raw_decode` from its offset). Decompression runs in a reader
thread (zlib and bz2 release the GIL), so it overlaps with the parsing.

Output in `out_dir`: `<lang>.tsv` (normalized title <TAB> QID, dump order) and `stats.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import shutil
import subprocess
import threading
import time
import zlib
from pathlib import Path

from tqdm import tqdm

from .dumps import open_dump
from .titles import normalize_title

log = logging.getLogger(__name__)

_SITELINKS = b'"sitelinks":'
_CLAIMS = b'"claims":'
# The dump writes the top-level id before "claims", whose values hold ids too ({"id":"Q5"});
# a line in another key order is parsed whole.
_ENTITY_ID = re.compile(rb'"id":\s*"([A-Z]\d+)"')
_CHUNK = 1 << 22
_MAX_LOGGED = 5
# Decompressors faster than Python's, tried in this order when on PATH.
PARALLEL_BZIP2 = ("lbzip2", "pbzip2")
PARALLEL_GZIP = ("igzip", "pigz")


class WikidataError(Exception):
    """An unreadable Wikidata dump; the message is one line naming the file and line."""


@contextlib.contextmanager
def _open_binary(path: Path):
    """The decompressed bytes of path (by magic number, not name).

    Python's bz2 decompresses ~40 MB/s, hours for the full dump: a parallel bzip2 on PATH
    (lbzip2, pbzip2) is used instead when there is one; for gzip, igzip (ISA-L) or pigz (which
    decompresses in its own threads, beside the parsing), else Python's.
    """
    with open(path, "rb") as f:
        magic = f.read(3)
    tools = PARALLEL_BZIP2 if magic == b"BZh" else PARALLEL_GZIP if magic[:2] == b"\x1f\x8b" else ()
    tool = next(filter(None, map(shutil.which, tools)), None)
    if tool:
        proc = subprocess.Popen([tool, "-dc", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with proc:
            yield proc.stdout
            proc.stdout.close()
            error = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait() != 0:
                raise OSError(error.splitlines()[0] if error else f"{tool} exited with {proc.returncode}")
    else:
        with open_dump(path) as f:  # the same magic-number detection as the Wikipedia dumps
            yield f


def _read_chunks(path: Path, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: decompressed blocks, then None; or, after the data read before it, the
    exception it hit (read1 returns what is decompressed so far, so no complete line is lost)."""
    parts, size = [], 0
    try:
        with _open_binary(path) as f:
            while not stop.is_set() and (part := f.read1(_CHUNK)):
                parts.append(part)
                size += len(part)
                if size >= _CHUNK:
                    out.put(b"".join(parts))
                    parts, size = [], 0
        out.put(b"".join(parts))
        out.put(None)
    except BaseException as e:  # handed to the consumer, which reports it
        out.put(b"".join(parts))
        out.put(e)


def iter_lines(path: Path):
    """Yield the lines of a (compressed) file as bytes without the newline.

    A truncated or corrupt compressed stream raises WikidataError after the complete lines
    read before it have been yielded.
    """
    blocks: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    reader = threading.Thread(target=_read_chunks, args=(path, blocks, stop), daemon=True)
    reader.start()
    rest = b""
    lineno = 0
    try:
        while True:
            block = blocks.get()
            if isinstance(block, BaseException):
                if isinstance(block, (EOFError, OSError, zlib.error)):
                    raise WikidataError(
                        f"{path}: truncated or corrupt compressed data after line {lineno} ({block})"
                    )
                raise block
            if block is None:
                break
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                lineno += 1
                yield line
        if rest:
            yield rest
    finally:  # also when the consumer stops early: end the reader (and its subprocess)
        stop.set()
        while reader.is_alive():
            try:
                blocks.get(timeout=0.1)
            except queue.Empty:
                pass


class _SitelinkParser:
    def __init__(self, languages):
        self.sites = {f"{lang}wiki": lang for lang in languages}
        # The quotes make the test exact: '"zhwiki"' is not found in '"zh_yuewiki"'.
        self.site_keys = re.compile(b'"(?:%s)"' % b"|".join(re.escape(s.encode()) for s in self.sites))
        self.decoder = json.JSONDecoder()

    def wanted(self, line: bytes, start: int) -> bool:
        return start >= 0 and self.site_keys.search(line, start) is not None

    def parse(self, line: bytes, start: int) -> tuple[str, list[tuple[str, str]]]:
        """(entity id, [(lang, raw title)]) of one entity line; ValueError if malformed."""
        end = line.find(_CLAIMS)
        match = _ENTITY_ID.search(line, 0, end if 0 <= end < start else start)
        if match:
            entity_id = match.group(1).decode()
            text = line[start + len(_SITELINKS) :].decode("utf-8")
            sitelinks, _ = self.decoder.raw_decode(text, len(text) - len(text.lstrip()))
        else:  # keys in an unusual order: parse the whole line
            entity = json.loads(line.rstrip().rstrip(b","))
            entity_id, sitelinks = entity["id"], entity["sitelinks"]
        if not sitelinks:  # serialized as [] when empty
            return entity_id, []
        if not isinstance(sitelinks, dict):
            raise ValueError("sitelinks is not an object")
        links = []
        for site, lang in self.sites.items():
            link = sitelinks.get(site)
            if link is not None:
                links.append((lang, link["title"]))
        return entity_id, links


def build_interwiki(wikidata_path, languages, out_dir, progress: bool = True) -> dict:
    """Write `<lang>.tsv` (title<TAB>QID) and `stats.json` into out_dir; return the stats."""
    path, out_dir = Path(wikidata_path), Path(out_dir)
    if not path.is_file():
        raise WikidataError(f"{path}: Wikidata dump not found")
    languages = list(languages)
    parser = _SitelinkParser(languages)
    stats = {
        "lines": 0, "items": 0, "sitelinks": {lang: 0 for lang in languages},
        "malformed": 0, "bad_titles": 0, "complete": False,
    }
    outputs = {lang: open(out_dir / f"{lang}.tsv", "w", encoding="utf-8") for lang in languages}
    started = time.perf_counter()
    lineno = 0
    try:
        with tqdm(desc="interwiki", unit=" lines", disable=not progress, mininterval=1) as bar:
            for lineno, line in enumerate(iter_lines(path), 1):
                if lineno % 100_000 == 0:
                    bar.update(100_000)
                if len(line) <= 4:  # "[", "]", "" (entity lines keep their "," and "\r":
                    short = line.strip().rstrip(b",")  # stripping copies 10+ kB a line)
                    stats["complete"] |= short == b"]"
                    if short in (b"[", b"]", b""):
                        continue
                stats["lines"] += 1
                if not line.startswith(b"{"):
                    _malformed(stats, path, lineno, "not a JSON object")
                    continue
                start = line.rfind(_SITELINKS)
                if not parser.wanted(line, start):
                    continue
                try:
                    qid, links = parser.parse(line, start)
                except (ValueError, KeyError, TypeError) as e:
                    _malformed(stats, path, lineno, e)
                    continue
                if not qid.startswith("Q") or not links:
                    continue
                stats["items"] += 1
                for lang, raw in links:
                    title = normalize_title(raw, lang) if isinstance(raw, str) else ""
                    if not title or "\t" in title or "\n" in title:
                        stats["bad_titles"] += 1
                        continue
                    outputs[lang].write(f"{title}\t{qid}\n")
                    stats["sitelinks"][lang] += 1
            bar.update(lineno % 100_000)
    finally:
        for f in outputs.values():
            f.close()
    seconds = time.perf_counter() - started
    stats["seconds"] = round(seconds, 3)
    stats["lines_per_s"] = round(stats["lines"] / seconds) if seconds > 0 else 0
    if not stats["complete"]:
        log.warning("%s ends without the closing ']' line: using the %d entities read",
                    path, stats["lines"])
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    return stats


def _malformed(stats: dict, path: Path, lineno: int, why) -> None:
    stats["malformed"] += 1
    if stats["malformed"] <= _MAX_LOGGED:
        log.warning("%s line %d: malformed entity skipped (%s)", path, lineno, why)


def load_interwiki(interwiki_dir, languages, keep=None) -> dict[tuple[str, str], str]:
    """Map (lang, title) → QID from build_interwiki's output.

    `keep`, if given, maps lang → set of titles: only those are loaded (the full map of 24
    wikis holds tens of millions of titles; the vocabulary needs only the counted ones).
    A title listed twice keeps its first QID.
    """
    interwiki_dir = Path(interwiki_dir)
    mapping: dict[tuple[str, str], str] = {}
    for lang in languages:
        path = interwiki_dir / f"{lang}.tsv"
        if not path.exists():
            raise WikidataError(f"{path}: missing; rerun the interwiki stage with this language")
        wanted = None if keep is None else keep.get(lang, ())
        conflicts = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                title, _, qid = line.rstrip("\n").partition("\t")
                if wanted is not None and title not in wanted:
                    continue
                key = (lang, title)
                if key in mapping:
                    conflicts += mapping[key] != qid
                    continue
                mapping[key] = qid
        if conflicts:
            log.warning("%s: %d titles listed with several QIDs; kept the first", path, conflicts)
    return mapping
