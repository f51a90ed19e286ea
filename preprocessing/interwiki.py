"""Wikidata sitelinks → (language, title) ↔ QID, for the configured Wikipedias.

Two inputs give the same output, recognised by their content (not their name), compressed or
not (gzip, bz2, plain):

- The sitelinks table, `wikidatawiki-YYYYMMDD-wb_items_per_site.sql.gz` (~2 GB; recommended):
  a mysqldump file whose long `INSERT INTO `wb_items_per_site` VALUES (row_id,item_id,'site',
  'Page title'),(...);` lines hold thousands of rows each. Each such line is first checked
  whole against the row grammar (one regex pass in C), then only the rows of the wanted sites
  are extracted (a second pass): no Python work per unwanted row. Quotes, MySQL escapes and
  commas or parentheses inside titles are handled exactly; anything else (another table, a
  line that does not parse, a file that stops inside the data) is an error naming the line.
- The JSON dump (`latest-all.json.gz`, ~130 GB): one JSON array with one entity per line:
  a "[" line, then `{...},` lines, then "]" (the final "]" may be missing). Most of the
  ~100M lines are large and hold no sitelink to our wikis, so a line is never fully parsed:
  a substring test for the wanted site keys rejects it, and only the `"sitelinks"` object of
  the remaining ones is decoded (`raw_decode` from its offset). Only this dump has the items'
  statements: the titles of disambiguation items (instances of Q4167410) are listed too.

Decompression runs in a reader thread (zlib and bz2 release the GIL), so it overlaps with the
parsing.

Output in `out_dir`: `<lang>.tsv` (normalized title <TAB> QID, in the input's order; the same
lines from either input when its items come in the same order), `stats.json`, and from the JSON
dump `<lang>.disambiguation.txt` (normalized titles of disambiguation items).
"""

from __future__ import annotations

import contextlib
import itertools
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
DISAMBIGUATION_ITEM = "Q4167410"  # "Wikimedia disambiguation page"
_DISAMBIGUATION_ID = b'"%s"' % DISAMBIGUATION_ITEM.encode()
# Wikidata names a Wikipedia by its database name: zh-yue → zh_yuewiki. be-tarask kept its old one.
_SITE_IDS = {"be-tarask": "be_x_old"}


def wikidata_site(lang: str) -> str:
    """Wikidata's site id of the Wikipedia with this code."""
    return _SITE_IDS.get(lang, lang.replace("-", "_")) + "wiki"


def sitelinks_file(out_dir, lang: str) -> Path:
    """(normalized title <TAB> QID) lines of one language."""
    return Path(out_dir) / f"{lang}.tsv"


def disambiguation_file(out_dir, lang: str) -> Path:
    """Normalized titles of one language's disambiguation items (JSON dump only)."""
    return Path(out_dir) / f"{lang}.disambiguation.txt"


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
        self.sites = {wikidata_site(lang): lang for lang in languages}
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

    @staticmethod
    def is_disambiguation(line: bytes) -> bool:
        """Whether the entity is an instance of (P31) Q4167410. Few lines mention the id at all,
        so only those are parsed whole."""
        if _DISAMBIGUATION_ID not in line:
            return False
        entity = json.loads(line.rstrip().rstrip(b","))
        claims = entity.get("claims") or {}
        for claim in claims.get("P31", []) if isinstance(claims, dict) else []:
            value = ((claim.get("mainsnak") or {}).get("datavalue") or {}).get("value")
            if (isinstance(value, dict) and value.get("id") == DISAMBIGUATION_ITEM
                    and claim.get("rank") != "deprecated"):
                return True
        return False


def build_interwiki(wikidata_path, languages, out_dir, progress: bool = True) -> dict:
    """Write `<lang>.tsv` (title<TAB>QID) and `stats.json` into out_dir (plus, from the JSON
    dump, `<lang>.disambiguation.txt`); return the stats."""
    path, out_dir = Path(wikidata_path), Path(out_dir)
    if not path.is_file():
        raise WikidataError(f"{path}: Wikidata dump not found")
    languages = list(languages)
    stats: dict = {"format": None, "lines": 0}
    outputs = {lang: open(sitelinks_file(out_dir, lang), "w", encoding="utf-8") for lang in languages}
    started = time.perf_counter()
    source = iter_lines(path)
    try:
        first = next(source, None)
        stats["format"] = _input_format(first, path)
        lines = source if first is None else itertools.chain([first], source)
        sql = stats["format"] == "sql"
        with tqdm(desc=f"interwiki ({stats['format']})", unit=" rows" if sql else " lines",
                  disable=not progress, mininterval=1) as bar:
            if sql:
                _read_sql(lines, path, languages, outputs, stats, bar)
            else:
                _read_json(lines, path, languages, outputs, stats, bar, out_dir)
    finally:
        source.close()  # ends the reader thread when an error stops the reading
        for f in outputs.values():
            f.close()
    seconds = time.perf_counter() - started
    stats["seconds"] = round(seconds, 3)
    unit = "rows" if stats["format"] == "sql" else "lines"
    stats[f"{unit}_per_s"] = round(stats[unit] / seconds) if seconds > 0 else 0
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    return stats


def input_format(path) -> str:
    """The format of a Wikidata file, "json" or "sql", from its first line (checked before any
    work: the interwiki stage may run hours after the start)."""
    path = Path(path)
    try:
        with open_dump(path) as f:
            head = f.read(1 << 16)
    except (OSError, EOFError, zlib.error) as e:
        raise WikidataError(f"{path}: unreadable ({e})") from None
    return _input_format(head.split(b"\n", 1)[0], path)


def _input_format(first: bytes | None, path: Path) -> str:
    """The input's format, "json" or "sql", from its first (decompressed) line."""
    head = (first or b"").lstrip(b"\xef\xbb\xbf \t\r")[:16]
    if not head or head[:1] in (b"[", b"{"):
        return "json"
    if head.startswith((b"--", b"/*")) or head.split(b" ", 1)[0].upper() in _SQL_STATEMENTS:
        return "sql"
    raise WikidataError(
        f"{path} line 1: neither the Wikidata JSON dump (latest-all.json.gz) nor its sitelinks "
        f"table (wikidatawiki-DATE-wb_items_per_site.sql.gz): starts with {head!r}")


def _write_sitelink(outputs: dict, stats: dict, lang: str, raw, qid: str) -> str:
    """Write one (title, QID) line; returns the normalized title, "" for a bad one."""
    title = normalize_title(raw, lang) if isinstance(raw, str) else ""
    if not title or "\t" in title or "\n" in title:
        stats["bad_titles"] += 1
        return ""
    outputs[lang].write(f"{title}\t{qid}\n")
    stats["sitelinks"][lang] += 1
    return title


def _read_json(lines, path: Path, languages: list[str], outputs: dict, stats: dict, bar,
               out_dir: Path) -> None:
    parser = _SitelinkParser(languages)
    stats.update({"items": 0, "sitelinks": {lang: 0 for lang in languages}, "malformed": 0,
                  "bad_titles": 0, "complete": False,
                  "disambiguation": {lang: 0 for lang in languages}})
    disambiguation = {lang: open(disambiguation_file(out_dir, lang), "w", encoding="utf-8")
                      for lang in languages}
    lineno = 0
    try:
        for lineno, line in enumerate(lines, 1):
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
                is_disambiguation = bool(links) and parser.is_disambiguation(line)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                _malformed(stats, path, lineno, e)
                continue
            if not qid.startswith("Q") or not links:
                continue
            stats["items"] += 1
            for lang, raw in links:
                title = _write_sitelink(outputs, stats, lang, raw, qid)
                if is_disambiguation and title:
                    disambiguation[lang].write(title + "\n")
                    stats["disambiguation"][lang] += 1
        bar.update(lineno % 100_000)
    finally:
        for f in disambiguation.values():
            f.close()
    if not stats["complete"]:
        log.warning("%s ends without the closing ']' line: using the %d entities read",
                    path, stats["lines"])


# ------------------------------------------------------------------------------------------
# The sitelinks table (mysqldump). Strings are quoted with ' and escape ', ", \ and control
# characters with a backslash, so inside a string a ' is always escaped: ",'" occurs only where
# a string starts (twice per row), and "(digits,digits,'" only where a row starts.
SITELINKS_TABLE = "wb_items_per_site"
_SQL_STATEMENTS = {b"SET", b"DROP", b"CREATE", b"INSERT", b"LOCK", b"UNLOCK", b"USE", b"ALTER",
                   b"COMMIT", b"START", b"BEGIN"}
_SQL_STRING_BODY = rb"[^'\\]*(?:\\.[^'\\]*)*"  # (unrolled: no backtracking)
_SQL_STRING = rb"'" + _SQL_STRING_BODY + rb"'"
_SQL_ROW = rb"\(\d+,\d+," + _SQL_STRING + rb"," + _SQL_STRING + rb"\)"
# A line of rows is nothing but rows, each followed by "," or the statement's ";": removing
# them leaves nothing. (A fullmatch of "(?:ROW,)*ROW;" does the same check, slower, with memory
# growing with the line.)
_SQL_ROWS = re.compile(_SQL_ROW + rb"[,;]", re.DOTALL)
_SQL_ONE_ROW = re.compile(_SQL_ROW + rb"[,;]?", re.DOTALL)
_SQL_INSERT = re.compile(rb"INSERT INTO `([^`]*)` VALUES *")
_SQL_TABLE_NAME = re.compile(rb"(?:CREATE TABLE|LOCK TABLES|DROP TABLE IF EXISTS|DROP TABLE) `([^`]*)`")
# Lines mysqldump writes after a table's data: a file whose last INSERT no such line follows
# was cut short.
_SQL_DATA_END = (b"UNLOCK TABLES", b"-- Dump completed")
_SQL_ENABLE_KEYS = b"ENABLE KEYS"
_SQL_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_SQL_ESCAPES = {b"0": b"\0", b"b": b"\b", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"Z": b"\x1a",
                b"%": b"\\%", b"_": b"\\_"}  # \% and \_ keep their backslash outside LIKE


def _sql_unescape(raw: bytes) -> bytes:
    return _SQL_ESCAPE.sub(lambda m: _SQL_ESCAPES.get(m.group(1), m.group(1)), raw)


def sql_quote(text: str) -> bytes:
    """A string quoted as mysqldump writes it: what _sql_unescape reads back (tests and benchmarks
    write sitelinks tables with it)."""
    data = text.encode("utf-8")
    for char, escaped in ((b"\\", b"\\\\"), (b"'", b"\\'"), (b'"', b'\\"'), (b"\n", b"\\n"),
                          (b"\r", b"\\r"), (b"\0", b"\\0"), (b"\x1a", b"\\Z")):
        data = data.replace(char, escaped)
    return b"'" + data + b"'"


def _sql_error(path: Path, lineno: int, body: bytes) -> WikidataError:
    """Where in a line that failed the row grammar it stops parsing."""
    pos = 0
    while (m := _SQL_ONE_ROW.match(body, pos)) and pos < len(body):
        pos = m.end()
    what = "cut short" if pos >= len(body) else f"at {body[pos:pos + 40]!r}"
    rows = body.count(b",'", 0, pos) // 2
    return WikidataError(
        f"{path} line {lineno}: a line of `{SITELINKS_TABLE}` rows that does not parse ({what}, "
        f"after {rows} complete rows): the file is damaged or cut; download it again")


def _read_sql(lines, path: Path, languages: list[str], outputs: dict, stats: dict, bar) -> None:
    sites = {wikidata_site(lang).encode(): lang for lang in languages}
    names = b"|".join(re.escape(site) for site in sorted(sites, key=len, reverse=True))
    # (row id, item, site, title) of the wanted sites' rows only, in a line known to parse.
    wanted = re.compile(rb"\((\d+),(\d+),'(" + names + rb")','(" + _SQL_STRING_BODY + rb")'\)", re.DOTALL)
    table = SITELINKS_TABLE.encode()
    stats.update({"rows": 0, "sitelinks": {lang: 0 for lang in languages}, "bad_titles": 0,
                  "complete": False})
    seen_table = in_insert = in_create = False
    lineno = 0
    for lineno, line in enumerate(lines, 1):
        stats["lines"] += 1
        if in_insert or line.startswith(b"INSERT"):
            if in_insert:
                body = line.rstrip(b"\r")
            else:
                m = _SQL_INSERT.match(line)
                if m is None:
                    raise WikidataError(f"{path} line {lineno}: an INSERT that does not parse: "
                                        f"{line[:60]!r}; download the file again")
                _check_table(m.group(1), table, path, lineno)
                seen_table = True
                body = line[m.end():].rstrip(b"\r")
                if not body:  # rows on the following lines
                    in_insert = True
                    continue
            if _SQL_ROWS.sub(b"", body):
                raise _sql_error(path, lineno, body)
            in_insert = body.endswith(b",")
            stats["complete"] = False  # until a line that follows the data
            rows = body.count(b",'") // 2
            stats["rows"] += rows
            bar.update(rows)
            for _, item, site, raw in wanted.findall(body):
                if b"\\" in raw:
                    raw = _sql_unescape(raw)
                try:
                    title = raw.decode("utf-8")
                except UnicodeDecodeError:
                    stats["bad_titles"] += 1
                    continue
                _write_sitelink(outputs, stats, sites[site], title, "Q" + item.decode())
            continue
        stripped = line.strip()
        if in_create:  # the column and key lines of a CREATE TABLE
            in_create = not stripped.startswith(b")")
            continue
        if not stripped:
            continue
        if stripped.startswith(_SQL_DATA_END) or _SQL_ENABLE_KEYS in stripped:
            stats["complete"] |= seen_table
            continue
        if stripped.startswith((b"--", b"/*")):
            continue
        if stripped.split(b" ", 1)[0].upper() not in _SQL_STATEMENTS:
            raise WikidataError(f"{path} line {lineno}: not a line of a mysqldump file "
                                f"({stripped[:60]!r}); download the file again")
        m = _SQL_TABLE_NAME.match(stripped)
        if m:
            _check_table(m.group(1), table, path, lineno)
            seen_table = True
            in_create = stripped.startswith(b"CREATE TABLE") and not stripped.endswith(b";")
    if not seen_table:
        raise WikidataError(f"{path}: no `{SITELINKS_TABLE}` table in this SQL dump; give "
                            f"wikidatawiki-DATE-{SITELINKS_TABLE}.sql.gz")
    if in_insert or not stats["complete"]:
        raise WikidataError(
            f"{path}: ends after line {lineno}, before the end of the `{SITELINKS_TABLE}` data "
            "(no 'UNLOCK TABLES' or '-- Dump completed' line after it): the file is cut short; "
            "download it again")


def _check_table(name: bytes, table: bytes, path: Path, lineno: int) -> None:
    if name != table:
        raise WikidataError(
            f"{path} line {lineno}: a SQL dump of table `{name.decode(errors='replace')}`, not "
            f"`{SITELINKS_TABLE}`: give wikidatawiki-DATE-{SITELINKS_TABLE}.sql.gz or the JSON "
            "dump latest-all.json.gz")


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
        path = sitelinks_file(interwiki_dir, lang)
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


def load_disambiguation(interwiki_dir, lang: str) -> set[str] | None:
    """Titles of the language's disambiguation items, or None where the interwiki stage had no
    such signal (the SQL table has no statements)."""
    path = disambiguation_file(interwiki_dir, lang)
    if not path.exists():
        return None
    return set(path.read_text(encoding="utf-8").splitlines())
