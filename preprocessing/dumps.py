"""Stream pages out of MediaWiki export XML dumps with flat memory.

Reads `.xml.bz2` (multistream too: Python's bz2 reads concatenated streams), `.xml.gz` and plain
`.xml`, chosen by the file's magic bytes, not its name. expat detects UTF-8 / UTF-16 from the BOM
or the XML declaration. Elements are cleared as soon as a page is complete, so memory does not
grow with the dump. Tag names are matched without their namespace (export-0.10, 0.11, ...).

This is the sequential reader; `multistream.py` cuts a dump into chunks that workers read in
parallel, and parses each chunk's pages with `fragment_pages` (the same page parser).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from xml.etree.ElementTree import ParseError, iterparse


class DumpError(Exception):
    """A dump that cannot be read to its end: missing, truncated or corrupt, malformed XML."""

    def __init__(self, message: str, path: Path | str, last_page: tuple[int, str] | None = None,
                 what: str | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.last_page = last_page  # (id, title) of the last complete page read, if any
        self.what = what or message  # the problem, without the file and the place


def dump_error(path: Path | str, what: str, last_page: tuple[int, str] | None) -> DumpError:
    """The one-line error: the file, the problem, and the last complete page read before it."""
    where = (f"last complete page id={last_page[0]} title={last_page[1]!r}" if last_page
             else "no complete page read")
    return DumpError(f"{path}: {what} ({where})", path, last_page, what)


@dataclass(frozen=True, slots=True)
class Page:
    id: int
    title: str
    ns: int
    redirect: str | None  # target title of a redirect page, as written in the dump
    text: str


def open_dump(path: Path | str) -> BinaryIO:
    """Open a dump for binary reading, decompressing by magic bytes (bz2, gzip, or none)."""
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"{path}: dump file not found", path)
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic == b"BZh":
        return bz2.open(path, "rb")
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


class _Read1:
    """Hand iterparse what one decompression step gives (read1), not full 16 KiB reads: a full
    read that hits the truncation raises and loses the complete pages decompressed before it."""

    def __init__(self, f: BinaryIO):
        self._read1 = f.read1

    def read(self, size: int = -1) -> bytes:
        return self._read1(size if size > 0 else 1 << 16)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class DumpReader:
    """Iterate `Page`s of one dump. `namespaces` ({key: name} from <siteinfo>) is filled once the
    first page has been read; `last_page` is the (id, title) of the last complete page."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.namespaces: dict[int, str] = {}
        self.last_page: tuple[int, str] | None = None
        self.bytes_read = 0  # compressed bytes consumed so far (for MB/s progress)

    def _fail(self, what: str) -> DumpError:
        return dump_error(self.path, what, self.last_page)

    def __iter__(self) -> Iterator[Page]:
        with self._reading() as raw:
            yield from self._pages(raw)

    @contextlib.contextmanager
    def _reading(self):
        """The opened dump; what goes wrong while reading it becomes a DumpError naming the file."""
        raw = open_dump(self.path)
        try:
            yield raw
        except ParseError as e:
            raise self._fail(f"malformed or incomplete XML: {e}") from None
        except (EOFError, OSError, zlib.error) as e:
            raise self._fail(f"truncated or corrupt compressed data: {e}") from None
        finally:
            raw.close()

    def _pages(self, raw: BinaryIO, underlying=None) -> Iterator[Page]:
        if underlying is None:
            underlying = getattr(raw, "_fp", None) or getattr(raw, "fileobj", None) or raw
        events = iterparse(_Read1(raw), events=("start", "end"))
        _, root = next(events)
        depth = 1  # element depth below the document root; pages live at depth 1
        fields: dict[str, str | None] = {}
        redirect: str | None = None
        for event, elem in events:
            if event == "start":
                depth += 1
                continue
            depth -= 1
            tag = _local(elem.tag)
            if tag == "page":
                if not (fields.get("id") or "").strip().isdigit():
                    raise self._fail(f"<page> without a valid <id> (title={fields.get('title')!r})")
                self.last_page = (int(fields["id"]), fields.get("title") or "")
                yield Page(
                    id=self.last_page[0],
                    title=self.last_page[1],
                    ns=int(fields.get("ns") or 0),
                    redirect=redirect,
                    text=fields.get("text") or "",
                )
                fields, redirect = {}, None
                root.clear()  # drop the finished page: memory stays flat
                self._update_position(underlying)
            elif depth == 2 and tag in ("title", "ns", "id"):
                fields[tag] = elem.text  # page-level fields (revision has its own <id>)
            elif tag == "redirect" and depth == 2:
                redirect = elem.get("title")
            elif tag == "text" and depth == 3:
                fields["text"] = elem.text
            elif tag == "revision":
                elem.clear()
            elif tag == "namespace":
                self.namespaces[int(elem.get("key", 0))] = elem.text or ""
            elif tag == "siteinfo":
                root.clear()

    def _update_position(self, underlying) -> None:
        if underlying is False:
            return
        try:
            self.bytes_read = underlying.tell()
        except (OSError, ValueError, AttributeError):
            pass


def fragment_pages(fragment: bytes, path: Path | str) -> tuple[list[Page], str | None]:
    """The pages of a run of whole `<page>` elements cut out of a UTF-8 dump (a chunk), and what
    ended it early, if anything (the pages before the problem are returned)."""
    reader = DumpReader(path)
    pages: list[Page] = []
    try:
        for page in reader._pages(io.BytesIO(b"<mediawiki>" + fragment + b"</mediawiki>"), False):
            pages.append(page)
    except ParseError as e:
        return pages, f"malformed or incomplete XML: {e}"
    except DumpError as e:
        return pages, e.what
    return pages, None


def read_siteinfo(path: Path | str) -> dict[int, str]:
    """{key: name} of the namespaces in the dump's <siteinfo> (read from its start only)."""
    reader = DumpReader(path)
    with reader._reading() as raw:
        for event, elem in iterparse(_Read1(raw), events=("start", "end")):
            tag = _local(elem.tag)
            if event == "end" and tag == "namespace":
                reader.namespaces[int(elem.get("key", 0))] = elem.text or ""
            elif tag == "siteinfo" and event == "end" or tag == "page":
                break
    return reader.namespaces


def iter_pages(path: Path | str) -> Iterator[Page]:
    """All pages of a dump, in order; DumpError names the file and the last complete page."""
    return iter(DumpReader(path))
