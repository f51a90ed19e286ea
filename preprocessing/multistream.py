"""Parallel reading of one dump: cut it into chunks that workers decompress and parse on their own.

`plan(dump)` chooses how a dump is cut:

- "streams": a bz2 multistream dump with its index (`…-multistream-index.txt.bz2` beside it, or
  given): chunks are runs of whole bz2 streams, starting at the index's offsets.
- "blocks": any other bz2 dump (one stream, or multistream without a usable index): chunks are
  byte ranges. bz2 blocks are not byte-aligned, so a worker finds the 48-bit block markers in
  its range at every bit offset and decodes each block as a stream of its own (a header, the
  block's bits, an end-of-stream marker with the block's CRC as the stream CRC).
- "xml": an uncompressed UTF-8 dump: chunks are byte ranges.
- None: gzip (not seekable), UTF-16 and others are read by the sequential reader (dumps.py).

A chunk owns the pages whose `<page>` tag starts in its decompressed bytes and decodes on past
its end to finish its last page. Every page is therefore read by exactly one chunk, in dump
order, wherever the cuts fall: the pages equal the sequential reader's for any chunk size and
any number of workers. Memory per worker is one chunk (TASK_BYTES compressed) plus one page.

An index is checked before it is trusted (offsets in order, each at a bz2 stream header, no
streams missing at its end); one that does not match its dump is reported in one line naming
both files, and the dump is cut by blocks instead.
"""

from __future__ import annotations

import bisect
import bz2
import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TASK_BYTES = 2 << 20  # compressed bytes per chunk: ~8 bz2 blocks, ~7 MB of XML
MAX_STREAM_BYTES = 64 << 20  # index offsets farther apart than this: streams missing from it
_READ = 1 << 20
_BLOCK_MAGIC = 0x314159265359  # pi: starts every bz2 block
_EOS_MAGIC = 0x177245385090  # sqrt(pi): ends every bz2 stream
_STREAM_START = re.compile(rb"BZh[1-9]1AY&SY")  # a stream header and its first block marker
TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"  # bz2's words


class IndexMismatch(Exception):
    """The multistream index does not describe the dump."""


class ChunkError(Exception):
    """A chunk cannot be read to its end. `resplit`: the cut itself may be wrong (a block marker
    found by chance inside compressed data), so reading the dump sequentially may succeed."""

    def __init__(self, what: str, resplit: bool = False):
        super().__init__(what)
        self.resplit = resplit


@dataclass(frozen=True)
class Chunk:
    start: int  # byte range of the file; the chunk owns the pages starting in it
    end: int


@dataclass(frozen=True)
class Plan:
    mode: str | None  # "streams", "blocks", "xml", or None: sequential
    chunks: tuple[Chunk, ...] = ()
    index: Path | None = None

    def key(self) -> dict:
        """What identifies the cut (progress records are valid only for the same cut)."""
        return {"mode": self.mode, "index": str(self.index) if self.index else None,
                "chunks": len(self.chunks), "task_bytes": TASK_BYTES}


# ------------------------------------------------------------------------- planning
def find_index_name(dump: Path) -> Path:
    """Where a dump's multistream index is: X.xml.bz2 → X-index.txt.bz2 (Wikimedia's naming)."""
    name = dump.name
    for suffix in (".xml.bz2", ".bz2"):
        if name.endswith(suffix):
            return dump.with_name(name[: -len(suffix)] + "-index.txt.bz2")
    return dump.with_name(name + "-index.txt.bz2")


def find_index(dump: Path) -> Path | None:
    """The multistream index beside the dump, if there is one."""
    candidate = find_index_name(Path(dump))
    return candidate if candidate.is_file() else None


def plan(dump: Path, index: Path | None = None, task_bytes: int | None = None) -> Plan:
    """How to cut `dump` (an explicit `index` is used instead of the one found beside it)."""
    dump = Path(dump)
    task_bytes = task_bytes or TASK_BYTES
    size = dump.stat().st_size
    with open(dump, "rb") as f:
        head = f.read(4096)
    if head[:3] == b"BZh":
        index = Path(index) if index else find_index(dump)
        if index is not None:
            try:
                offsets = check_index(index, dump)
                return Plan("streams", _group(offsets, size, task_bytes), index)
            except IndexMismatch as e:
                log.warning("%s does not match %s (%s): reading the dump without it", index, dump, e)
        return Plan("blocks", _ranges(size, task_bytes))
    if _utf8_xml(head):
        return Plan("xml", _ranges(size, task_bytes))
    return Plan(None)


def _utf8_xml(head: bytes) -> bool:
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"<"):
        return False  # gzip, UTF-16, ...
    declared = re.match(rb"<\?xml[^>]*encoding=[\"']([\w-]+)", head)
    return declared is None or declared.group(1).lower() in (b"utf-8", b"utf8")


def _ranges(size: int, task_bytes: int) -> tuple[Chunk, ...]:
    return tuple(Chunk(a, min(a + task_bytes, size)) for a in range(0, size, task_bytes)) or (Chunk(0, 0),)


def _group(offsets: list[int], size: int, task_bytes: int) -> tuple[Chunk, ...]:
    """Runs of whole streams of about task_bytes; the first starts at 0 (<siteinfo>, and any
    page before the first indexed stream), the last ends at the end of the file."""
    starts = [0]
    for offset in offsets:
        if offset - starts[-1] >= task_bytes:
            starts.append(offset)
    return tuple(Chunk(a, b) for a, b in zip(starts, starts[1:] + [size]))


def check_index(index: Path, dump: Path) -> list[int]:
    """The distinct stream offsets of a multistream index, checked against the dump."""
    from .dumps import DumpError, open_dump

    offsets: dict[int, None] = {}
    line_start = re.compile(rb"^(\d+):\d+:", re.M)
    try:
        with open_dump(index) as f:
            rest = b""
            while block := f.read(_READ):
                block = rest + block
                cut = block.rfind(b"\n") + 1
                part, rest = block[:cut], block[cut:]
                lines = part.count(b"\n")
                found = line_start.findall(part)
                if len(found) != lines:
                    raise IndexMismatch("a line is not offset:page_id:title")
                offsets.update(dict.fromkeys(found))
        if rest.strip():
            if not line_start.match(rest):
                raise IndexMismatch("a line is not offset:page_id:title")
            offsets.update(dict.fromkeys(line_start.findall(rest)))
    except (DumpError, EOFError, OSError, ValueError) as e:
        raise IndexMismatch(f"unreadable: {e}") from None
    result = [int(o) for o in offsets]
    if not result:
        raise IndexMismatch("empty")
    if any(a >= b for a, b in zip(result, result[1:])):
        raise IndexMismatch("offsets out of order")
    size = dump.stat().st_size
    if result[-1] >= size:
        raise IndexMismatch(f"offset {result[-1]} is past the end of the dump ({size} bytes)")
    if max(b - a for a, b in zip([0] + result, result + [size])) > MAX_STREAM_BYTES:
        raise IndexMismatch("streams are missing from it (offsets too far apart)")
    with open(dump, "rb") as f:
        for offset in result:
            f.seek(offset)
            if not _STREAM_START.match(f.read(10)):
                raise IndexMismatch(f"no bz2 stream starts at offset {offset}")
        # After the last indexed stream only the stream closing </mediawiki> may follow.
        f.seek(result[-1] + 1)
        if len(_STREAM_START.findall(f.read(size - result[-1] - 1))) > 1:
            raise IndexMismatch(f"it ends before the dump (more streams follow offset {result[-1]})")
    return result


# ------------------------------------------------------------------------- reading a chunk
def read_chunk(path: Path, mode: str, chunk: Chunk) -> tuple[bytes, ChunkError | None]:
    """The whole <page> elements the chunk owns, as one UTF-8 byte string, and the error that
    stopped the reading early, if any (then the pages complete before it are returned)."""
    data = bytearray()
    owned, error = None, None
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        try:
            for piece in _READERS[mode](f, chunk, size):
                if piece is _PAST_END:  # decode further only to finish the last page
                    owned = len(data)
                    if _last_page_done(data, owned):
                        break
                    continue
                data += piece
                if owned is not None and _last_page_done(data, owned):
                    break
        except ChunkError as e:
            error = e
    if owned is None:
        owned = len(data)
    first = data.find(b"<page>")
    if first < 0 or first >= owned:
        return b"", error
    last = data.rfind(b"<page>", 0, owned + 5)  # a tag cut by the chunk's end is still its own
    end = data.find(b"</page>", last)
    if end < 0:  # the last page is incomplete: keep the complete ones
        end = data.rfind(b"</page>", first, last)
        error = error or ChunkError("malformed or incomplete XML: the dump ends inside a <page>")
        if end < 0:
            return b"", error
    return bytes(data[first:end + 7]), error


_PAST_END = object()  # yielded by a reader between the chunk's own bytes and those after it


def _last_page_done(data: bytearray, owned: int) -> bool:
    if len(data) < owned + 5 and any(data.endswith(b"<page>"[:k]) for k in range(1, 6)):
        return False  # a <page> tag may start in the chunk's last bytes
    last = data.rfind(b"<page>", 0, owned + 5)
    return last < 0 or data.find(b"</page>", last) >= 0


def _xml(f, chunk: Chunk, size: int):
    f.seek(chunk.start)
    yield f.read(chunk.end - chunk.start)
    yield _PAST_END
    while piece := f.read(_READ):
        yield piece


def _bz2_streams(f, chunk: Chunk, size: int):
    """Whole bz2 streams from the chunk's start (bz2.open's handling of what follows the last)."""
    f.seek(chunk.start)
    pos, stop = chunk.start, chunk.end
    decomp, fresh, raw = bz2.BZ2Decompressor(), True, b""
    while True:
        if not raw:
            if pos >= stop:
                if stop == size:
                    break
                if not fresh:
                    raise ChunkError(f"a bz2 stream runs past offset {stop}", resplit=True)
                yield _PAST_END
                stop = size
            raw = f.read(min(_READ, stop - pos))
            pos += len(raw)
            if not raw:
                break
        try:
            out = decomp.decompress(raw)
        except (OSError, ValueError, EOFError) as e:
            if fresh and pos >= size:
                return  # trailing bytes that are no stream are ignored, as bz2.open does
            raise ChunkError(f"truncated or corrupt compressed data: {e}") from None
        fresh = False
        raw = b""
        if out:
            yield out
        if decomp.eof:
            raw = decomp.unused_data
            decomp, fresh = bz2.BZ2Decompressor(), True
    if not fresh:
        raise ChunkError(f"truncated or corrupt compressed data: {TRUNCATED}")


# "blocks": bz2 blocks found at bit level.
def _patterns():
    """(kind, bit shift, offset of the fully determined bytes, those bytes, length) per shift."""
    out = []
    for kind, magic in (("block", _BLOCK_MAGIC), ("eos", _EOS_MAGIC)):
        for shift in range(8):
            nbytes = (48 + shift + 7) // 8
            pad = nbytes * 8 - 48 - shift
            raw = (magic << pad).to_bytes(nbytes, "big")
            first, last = (1 if shift else 0), nbytes - (1 if pad else 0)
            out.append((kind, shift, first, raw[first:last], nbytes, magic))
    return out


_PATTERNS = _patterns()


class _Bits:
    """The file's bytes from `start` on, read as needed, and the bz2 markers found in them."""

    def __init__(self, f, start: int):
        self.f, self.base = f, start
        f.seek(start)
        self.buf = b""
        self.marks: dict[int, str] = {}  # absolute bit position -> "block" | "eos"
        self.sorted: list[int] = []

    def _more(self) -> bool:
        piece = self.f.read(_READ)
        if not piece:
            return False
        old = len(self.buf)
        self.buf += piece
        lo = max(0, old - 7)
        for kind, shift, first, core, nbytes, magic in _PATTERNS:
            i = self.buf.find(core, lo)
            while i >= 0:
                at = i - first
                if at >= 0 and at + nbytes <= len(self.buf):
                    value = int.from_bytes(self.buf[at:at + nbytes], "big")
                    if (value >> (nbytes * 8 - shift - 48)) & ((1 << 48) - 1) == magic:
                        self.marks[(self.base + at) * 8 + shift] = kind
                i = self.buf.find(core, i + 1)
        self.sorted = sorted(self.marks)
        return True

    def next_mark(self, bit: int, kind: str | None = None) -> int | None:
        """The first marker (of `kind`) at or after `bit`; None if the file has none. A marker
        found lies wholly in the bytes read, and so does any marker before it."""
        while True:
            for pos in self.sorted[bisect.bisect_left(self.sorted, bit):]:
                if kind is None or self.marks[pos] == kind:
                    return pos
            if not self._more():
                return None

    def _bits(self, a: int, b: int) -> int:
        lo, hi = a // 8 - self.base, (b + 7) // 8 - self.base
        value = int.from_bytes(self.buf[lo:hi], "big") >> ((hi + self.base) * 8 - b)
        return value & ((1 << (b - a)) - 1)

    def block(self, a: int, b: int) -> bytes:
        """The block at bits [a, b) decoded as a stream of its own."""
        crc = self._bits(a + 48, a + 80)  # a one-block stream's CRC is the block's CRC
        n = 32 + (b - a) + 80
        stream = (int.from_bytes(b"BZh9", "big") << (b - a)) | self._bits(a, b)
        stream = (((stream << 48) | _EOS_MAGIC) << 32 | crc) << (-n % 8)
        try:
            return bz2.decompress(stream.to_bytes((n + 7) // 8, "big"))
        except (OSError, ValueError, EOFError) as e:
            raise ChunkError(f"truncated or corrupt compressed data: {e}", resplit=True) from None


def _bz2_blocks(f, chunk: Chunk, size: int):
    bits = _Bits(f, chunk.start)
    pos = bits.next_mark(chunk.start * 8, "block")
    past_end = False
    while pos is not None:
        if not past_end and pos >= chunk.end * 8:
            past_end = True
            yield _PAST_END
        end = bits.next_mark(pos + 48)
        if end is None:  # no end-of-stream marker after the last block
            raise ChunkError(f"truncated or corrupt compressed data: {TRUNCATED}")
        yield bits.block(pos, end)
        pos = bits.next_mark(end, "block")
    if not past_end:
        yield _PAST_END


_READERS = {"xml": _xml, "streams": _bz2_streams, "blocks": _bz2_blocks}


# ------------------------------------------------------------------------- writing
def write_multistream(xml: bytes, path: Path, pages_per_stream: int = 100) -> tuple[Path, Path]:
    """Write a dump as Wikimedia does: one bz2 stream for everything before the first page
    (<siteinfo>), one per `pages_per_stream` pages, one for the closing tag; and its index
    (`offset:page_id:title` per page) beside it. Returns (dump, index)."""
    from html import unescape

    path = Path(path)
    starts = []
    at = xml.find(b"<page>")
    while at >= 0:
        line = xml.rfind(b"\n", 0, at) + 1
        starts.append(line if not xml[line:at].strip() else at)
        at = xml.find(b"<page>", at + 6)
    end = xml.rfind(b"</mediawiki>")
    cuts = [0, *starts[::pages_per_stream], end if end >= 0 else len(xml), len(xml)]
    page = re.compile(rb"<title>(.*?)</title>.*?<id>(\d+)</id>", re.S)
    index, offset = [], 0
    with open(path, "wb") as f:
        for a, b in zip(cuts, cuts[1:]):
            part = xml[a:b]
            for m in page.finditer(part):
                title = unescape(m.group(1).decode("utf-8"))
                index.append(f"{offset}:{int(m.group(2))}:{title}\n")
            data = bz2.compress(part)
            f.write(data)
            offset += len(data)
    index_path = find_index_name(path)
    index_path.write_bytes(bz2.compress("".join(index).encode("utf-8")))
    return path, index_path
