"""Dataset stage: pages with link spans → tokenized, entity-annotated, packed Arrow examples.

Per page, as the reference (studio-ousia/luke `WikipediaPretrainingDataset._process_page`):
paragraphs → ICU sentences → tokens, links → entity ids (redirects resolved) and token spans;
sentences shorter than `min_sentence_length` or longer than `max_seq_length - 2` tokens are
skipped; consecutive sentences of a page are packed into examples of at most
`max_seq_length` tokens including `<s>` and `</s>`; examples without entities are dropped; a
mention longer than `max_mention_length` keeps its first tokens (`long_mentions="drop"` drops it).
Unlike the reference, by default (`entity_overflow="split"`) an example is also closed before it
would exceed `max_entity_length` entities (the reference, `"truncate"`, cuts the surplus), so
entities are lost only when one sentence alone holds more; and a link that crosses an ICU sentence
boundary merges the two sentences instead of being dropped.

Mentions and tokens. Each sentence is tokenized whole, in one batched call for many pages, so
the text is tokenized as the model will see it. A mention is the run of tokens whose offsets lie
inside the link's characters. A word-start marker `▁` belongs to the word after it: the XLM-R
tokenizer that transformers builds gives `▁Berlin` the offsets of `Berlin` and a lone `▁` token
(before a piece without `▁`, common in ja/zh/th) the offsets of the next character; a
`tokenizer.json` with a plain Metaspace pre-tokenizer gives `▁Berlin` the preceding space too
and a lone `▁` just that space, so there leading whitespace is first cut from every token's
offsets (a lone `▁` becomes empty, at the next word's start). Either way a mention that starts
at a word includes the word's `▁`. Where a link boundary falls inside a token (`[[東京]]は`
tokenized as `▁東京は`), that token alone is re-tokenized in parts at the boundary with the
same sentencepiece model (`▁東京` + `は`), so every mention starts and ends on a token boundary
and the rest of the sentence keeps its natural tokenization.

Two tokenizer paths give the same ids and offsets. sentencepiece's own encoder (when the tokenizer
has its `sentencepiece.bpe.model`) is several times faster than `tokenizers`' encode_batch; it
is used for a sentence only where its pieces spell the sentence's characters exactly (so the
offsets follow from the pieces), and only after a check at load time over probe texts of many
scripts has found it identical to the fast tokenizer (`SentencePieceEncoder`); other sentences,
and tokenizers that fail the check, go through `tokenizers` (the path in use is logged).

Resumable: with a `work_dir`, each task's examples are appended to an Arrow stream there and a
progress record saved (progress.py); a killed run continues after the last record, and the
dataset it writes equals an uninterrupted run's.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from .contract import DATASET_STAT_KEYS, DataDir, DatasetLimits, DatasetMetadata, features, sha256_file
from .fsutil import atomic_dir
from .progress import ProgressLog, exit_with
from .sentences import sentence_spans_many
from .spm_encoder import SentencePieceEncoder
from .titles import Redirects

log = logging.getLogger(__name__)

PAGES_PER_TASK = 32  # pages tokenized in one batched call (and sent to a worker at once)
MAX_LOGGED_ERRORS = 5
SPACE = "▁"  # sentencepiece's word-start marker


def load_tokenizer(tokenizer):
    """A transformers fast tokenizer with XLM-R's special ids, from an object or a name/path."""
    if isinstance(tokenizer, (str, Path)):
        # XLM-R's class itself: AutoTokenizer imports torch, seconds of start-up for nothing.
        from transformers import XLMRobertaTokenizer

        name = str(tokenizer)
        tokenizer = XLMRobertaTokenizer.from_pretrained(name)
        if len(tokenizer) <= len(tokenizer.all_special_tokens):  # it makes one up when none is found
            raise OSError(f"no tokenizer found at {name} (neither tokenizer.json nor "
                          "sentencepiece.bpe.model, locally or in the hub cache)")
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {name}: a fast (tokenizers-backed) tokenizer is needed for offsets")
    if (tokenizer.bos_token_id, tokenizer.eos_token_id) != (0, 2):
        raise ValueError(f"tokenizer {name}: expected XLM-R ids <s>=0 and </s>=2, got "
                         f"{tokenizer.bos_token_id} and {tokenizer.eos_token_id}")
    if "Metaspace" not in tokenizer.backend_tokenizer.to_str():
        raise ValueError(f"tokenizer {name}: expected a sentencepiece (Metaspace) tokenizer like XLM-R's")
    return tokenizer


class PageProcessor:
    """Turns batches of pages.jsonl lines into examples; built once, used in each worker."""

    def __init__(self, lang, entity_vocab, redirects, tokenizer, max_seq_length, max_entity_length,
                 max_mention_length, min_sentence_length, keep_unknown_entities, source="pages.jsonl",
                 fast_tokenizer=True, long_mentions="truncate", entity_overflow="split"):
        from tokenizers import Tokenizer

        self.lang = lang
        self.entity_vocab = entity_vocab
        self.redirects = redirects
        # A private copy of the Rust tokenizer, with truncation and padding off whatever the caller set.
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.unk_entity = entity_vocab.UNK_ID
        self.max_num_tokens = max_seq_length - 2  # room for <s> and </s>
        self.max_entity_length = max_entity_length
        self.max_mention_length = max_mention_length
        self.min_sentence_length = min_sentence_length
        self.keep_unknown_entities = keep_unknown_entities
        self.long_mentions, self.entity_overflow = long_mentions, entity_overflow
        self.source = source
        self.errors_logged = 0
        # Does a word's "▁" carry the offsets of the space it replaced? (see the module docstring)
        probe = self.backend.encode("a b", add_special_tokens=False).offsets
        self.offsets_cover_spaces = any(start < end and "a b"[start] == " " for start, end in probe)
        self.fast = None
        if fast_tokenizer:
            self.fast = SentencePieceEncoder.for_tokenizer(tokenizer, self)

    def encode_with_tokenizers(self, texts, with_offsets):
        """[(ids, starts, ends)] from `tokenizers` (offsets without leading spaces; starts and ends
        are None where not `with_offsets`)."""
        result = []
        for text, encoding, wanted in zip(texts, self.backend.encode_batch(texts, add_special_tokens=False),
                                          with_offsets):
            starts = ends = None
            if wanted:
                offsets = encoding.offsets
                if self.offsets_cover_spaces:
                    offsets = [_skip_spaces(text, start, end) for start, end in offsets]
                starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
            result.append((encoding.ids, starts, ends))
        return result

    def encode(self, texts, with_offsets):
        if self.fast is not None:
            return self.fast.encode(texts, with_offsets)
        return self.encode_with_tokenizers(texts, with_offsets)

    # -- links and sentences -------------------------------------------------------------
    def _links(self, text, links, stats):
        """Valid links of a paragraph as sorted (start, end, entity_id)."""
        kept = []
        bad = in_vocab = 0  # counted here, added to the Counter once
        lookup, resolve, lang = self.entity_vocab.lookup, self.redirects.resolve, self.lang
        for link in links:
            start, end, title = link
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
                bad += 1
                continue
            while start < end and text[start].isspace():  # anchors like "[[Berlin| Berlin]]"
                start += 1
            while start < end and text[end - 1].isspace():
                end -= 1
            if start == end:
                bad += 1
                continue
            entity_id = lookup(lang, resolve(title))
            if entity_id is not None:
                in_vocab += 1
            elif self.keep_unknown_entities:
                entity_id = self.unk_entity
            else:
                continue
            kept.append((start, end, entity_id))
        stats["links"] += len(links)
        if bad:
            stats["skipped.bad_link"] += bad
        if in_vocab:
            stats["links_in_vocab"] += in_vocab
        kept.sort()
        # Overlapping links cannot both be token spans of one sequence; keep the first.
        result = []
        for link in kept:
            if result and link[0] < result[-1][1]:
                stats["skipped.overlapping_link"] += 1
            else:
                result.append(link)
        return result

    def _paragraphs(self, page):
        """[(text, links)] of one page and its link counts; raises on a malformed page."""
        stats = Counter()
        paragraphs = []
        for paragraph in page["paragraphs"]:
            text = paragraph["text"]
            if not isinstance(text, str):
                raise TypeError(f"paragraph text is {type(text).__name__}, not str")
            paragraphs.append((text, self._links(text, paragraph.get("links", ()), stats)))
        stats["paragraphs"] += len(paragraphs)
        return paragraphs, stats

    @staticmethod
    def _sentences(text, links, spans, stats):
        """[(sentence_text, [(start, end, entity_id)] relative to the sentence)] of a paragraph."""
        sentences = []
        pending = iter(links)  # sorted, and no sentence boundary falls inside one
        link = next(pending, None)
        for s_start, s_end in spans:
            inside = []
            while link is not None and link[0] < s_end:
                if link[0] >= s_start and link[1] <= s_end:
                    inside.append((link[0] - s_start, link[1] - s_start, link[2]))
                else:  # it reaches into the whitespace between sentences
                    stats["skipped.link_outside_sentence"] += 1
                link = next(pending, None)
            sentences.append((text[s_start:s_end], inside))
        while link is not None:
            stats["skipped.link_outside_sentence"] += 1
            link = next(pending, None)
        stats["sentences"] += len(sentences)
        return sentences

    # -- characters to tokens --------------------------------------------------------------
    def _split_tokens(self, text, ids, starts, ends, links):
        """ids, start and end offsets of a sentence, with each token that straddles a link
        boundary re-tokenized in parts at the boundary (a part's tokens get the part's offsets)."""
        cuts_inside = {}  # token index -> link boundaries strictly inside that token
        for cut in {b for a, e, _ in links for b in (a, e)}:
            i = bisect.bisect_left(starts, cut) - 1  # the last token starting before the cut
            if i >= 0 and ends[i] > cut:
                cuts_inside.setdefault(i, []).append(cut)
        if not cuts_inside:
            return ids, starts, ends
        normalize = self.backend.normalizer.normalize_str if self.backend.normalizer else str
        new_ids, new_starts, new_ends = [], [], []
        for i, (token_id, start, end) in enumerate(zip(ids, starts, ends)):
            if i not in cuts_inside:
                new_ids.append(token_id)
                new_starts.append(start)
                new_ends.append(end)
                continue
            bounds = [start, *sorted(cuts_inside[i]), end]
            for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
                # Only the first part keeps the token's word-start marker.
                space = k == 0 and self.backend.id_to_token(token_id).startswith(SPACE)
                part = (SPACE if space else "") + normalize(text[a:b])
                for token in self.backend.model.tokenize(part):
                    new_ids.append(token.id)
                    new_starts.append(a)
                    new_ends.append(b)
        return new_ids, new_starts, new_ends

    def _tokenized(self, text, encoding, links, stats):
        """(token ids, [(token_start, token_end, entity_id)]) of one sentence, or None to skip it.
        `encoding`: (ids, start offsets, end offsets), the offsets without leading spaces."""
        mentions = []
        ids, starts, ends = encoding
        if links:
            ids, starts, ends = self._split_tokens(text, ids, starts, ends, links)
            for a, b, entity_id in links:
                first = bisect.bisect_left(starts, a)  # a lone "▁" starting at `a` is included
                end = bisect.bisect_left(starts, b, lo=first)
                if first == end or ends[end - 1] > b:
                    stats["skipped.unaligned_mention"] += 1  # e.g. only characters the normalizer drops
                elif end - first > self.max_mention_length and self.long_mentions == "drop":
                    stats["skipped.long_mention"] += 1
                elif end - first > self.max_mention_length:  # its first tokens, as the reference keeps
                    stats["truncated_mentions"] += 1
                    mentions.append((first, first + self.max_mention_length, entity_id))
                else:
                    mentions.append((first, end, entity_id))
        if len(ids) < self.min_sentence_length:
            stats["skipped.short_sentence"] += 1
            return None
        if len(ids) > self.max_num_tokens:
            stats["skipped.long_sentence"] += 1
            return None
        return ids, mentions

    # -- packing ---------------------------------------------------------------------------
    def _pack(self, page_id, sentences, stats):
        """Consecutive sentences of one page → examples within the token and entity limits."""
        examples, words, mentions = [], [], []
        for ids, sentence_mentions in sentences:
            too_many = len(mentions) + len(sentence_mentions) > self.max_entity_length
            if words and (len(words) + len(ids) > self.max_num_tokens or (too_many and self.entity_overflow == "split")):
                self._emit(page_id, words, mentions, stats, examples)
                words, mentions = [], []
            mentions += [(s + len(words), t + len(words), e) for s, t, e in sentence_mentions]
            words += ids
        if words:
            self._emit(page_id, words, mentions, stats, examples)
        return examples

    def _emit(self, page_id, words, mentions, stats, examples):
        if not mentions:
            stats["skipped.example_without_entities"] += 1
            return
        if len(mentions) > self.max_entity_length:  # (with split: one sentence alone holds too many)
            stats["skipped.entity_overflow"] += len(mentions) - self.max_entity_length
            mentions = mentions[: self.max_entity_length]
        stats["examples"] += 1
        stats["tokens"] += len(words) + 2
        stats["entities"] += len(mentions)
        examples.append({
            "word_ids": [self.bos, *words, self.eos],
            "entity_ids": [e for _, _, e in mentions],
            "entity_spans": [[s + 1, t + 1] for s, t, _ in mentions],  # +1 for <s>
            "page_id": page_id,
            "language": self.lang,
        })

    # -- a batch of pages ------------------------------------------------------------------
    def __call__(self, lines: list[tuple[int, str]]) -> tuple[list[dict], Counter]:
        stats = Counter()
        pages = []  # (page_id, [(text, links)])
        for line_no, line in lines:
            try:
                page = json.loads(line)
                page_id = int(page["id"])
                paragraphs, page_stats = self._paragraphs(page)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                stats["skipped.bad_page"] += 1
                if self.errors_logged < MAX_LOGGED_ERRORS:
                    self.errors_logged += 1
                    log.warning("%s:%d: skipping malformed page: %s: %s", self.source, line_no,
                                type(e).__name__, e)
                continue
            stats["pages"] += 1
            stats.update(page_stats)
            pages.append((page_id, paragraphs))
        # One ICU call and one batched tokenizer call for all pages of the batch.
        paragraphs = [p for _, page in pages for p in page]
        texts, links = [t for t, _ in paragraphs], [ls for _, ls in paragraphs]
        spans = iter(sentence_spans_many(texts, self.lang, links))
        pages = [
            (page_id, [s for text, ls in page for s in self._sentences(text, ls, next(spans), stats)])
            for page_id, page in pages
        ]
        texts = [text for _, sentences in pages for text, _ in sentences]
        encodings = iter(self.encode(texts, [bool(ls) for _, sentences in pages for _, ls in sentences]))
        examples = []
        for page_id, sentences in pages:
            tokenized = (self._tokenized(text, next(encodings), links, stats) for text, links in sentences)
            examples += self._pack(page_id, [t for t in tokenized if t is not None], stats)
        return examples, stats


def _skip_spaces(text, start, end):
    while start < end and text[start].isspace():
        start += 1
    return start, end


# One processor per worker process, set by the pool initializer (inherited through fork).
_worker_processor: PageProcessor | None = None


def _init_worker(processor: PageProcessor, main_pid: int | None = None) -> None:
    global _worker_processor
    _worker_processor = processor
    if main_pid is not None:
        exit_with(main_pid)


def _run_worker(lines):
    return _arrow_task(_worker_processor, lines)


def _arrow_task(processor: PageProcessor, lines) -> tuple[bytes, Counter, int]:
    """A task's examples as one Arrow record batch (IPC message bytes: the main process only
    writes them), its stats, and the number of examples."""
    import pyarrow as pa

    examples, stats = processor(lines)
    if not examples:
        return b"", stats, 0
    batch = pa.RecordBatch.from_pylist(examples, schema=_schema())
    return batch.serialize().to_pybytes(), stats, len(examples)


@functools.lru_cache(maxsize=1)
def _schema():
    return features().arrow_schema


def _ordered_window(pool, fn, items, window: int):
    """fn(item) for each item on the pool, in input order, with at most `window` tasks in flight.
    (Pool.imap keeps every finished result until it is consumed: when writing the Arrow file is
    the slower side, the examples of the whole dump would pile up in memory.)"""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _batches(path: Path, offset: int = 0, line_no: int = 0):
    """(lines, end offset, end line number) per task, from byte `offset` of pages.jsonl."""
    batch = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            offset += len(raw)
            line_no += 1
            if raw.strip():
                batch.append((line_no, raw.decode("utf-8", errors="replace")))
                if len(batch) == PAGES_PER_TASK:
                    yield batch, offset, line_no
                    batch = []
    if batch:
        yield batch, offset, line_no


def _stats_dict(counter: Counter) -> dict:
    stats = {k: counter.get(k, 0) for k in DATASET_STAT_KEYS}
    stats["skipped"] = {k.split(".", 1)[1]: v for k, v in sorted(counter.items()) if k.startswith("skipped.")}
    return stats


_ARROW = "examples.arrow"
_ARROW_END = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # end of an Arrow IPC stream


def _progress_key(pages_file: Path, lang: str, processor: PageProcessor, tokenizer, entity_vocab) -> dict:
    stat = pages_file.stat()
    limits = [processor.max_num_tokens, processor.max_entity_length, processor.max_mention_length,
              processor.min_sentence_length, processor.keep_unknown_entities, processor.long_mentions,
              processor.entity_overflow]
    tokenizer_hash = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
    return {"pages": str(pages_file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "lang": lang, "limits": limits, "tokenizer": tokenizer_hash,
            "entity_vocab": getattr(entity_vocab, "sha256", None), "pages_per_task": PAGES_PER_TASK}


def build_dataset(pages_dir, lang, entity_vocab, tokenizer, out_dir, max_seq_length=512,
                  max_entity_length=128, max_mention_length=30, min_sentence_length=5,
                  keep_unknown_entities=False, num_workers=1, progress=True, work_dir=None,
                  fast_tokenizer=True, long_mentions="truncate", entity_overflow="split") -> dict:
    """Build `out_dir` (datasets.save_to_disk) from `pages_dir`; returns the stage's stats.

    Pages are processed in file order by `num_workers` processes; the output does not depend
    on the number of workers. Stats: pages, paragraphs, sentences (ICU sentences before any
    filter), links, links_in_vocab, examples, tokens (of the examples, `<s>` and `</s>`
    included), entities (mentions in the examples), and skipped {reason: count}.
    `work_dir`: where the examples and progress records go while the dataset is built; a later
    call with the same work_dir continues after the last record (default: a temporary
    directory). `fast_tokenizer=False` keeps to `tokenizers` (see spm_encoder.py).
    """
    import datasets
    from tqdm import tqdm

    pages_dir = Path(pages_dir)
    pages_file = pages_dir / "pages.jsonl"
    redirects_file = pages_dir / "redirects.tsv"
    for path in (pages_file, redirects_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the extract stage for '{lang}' first")
    if max_seq_length < 3 or max_entity_length < 1 or max_mention_length < 1:
        raise ValueError("max_seq_length must be >= 3, max_entity_length and max_mention_length >= 1")
    tokenizer = load_tokenizer(tokenizer)
    processor = PageProcessor(
        lang, entity_vocab, Redirects.load(redirects_file), tokenizer, max_seq_length,
        max_entity_length, max_mention_length, min_sentence_length, keep_unknown_entities,
        source=str(pages_file), fast_tokenizer=fast_tokenizer, long_mentions=long_mentions,
        entity_overflow=entity_overflow,
    )
    total = None
    if (pages_dir / "stats.json").is_file():
        total = json.loads((pages_dir / "stats.json").read_text()).get("pages")

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dataset-"))
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        log_ = ProgressLog(work_dir, _progress_key(pages_file, lang, processor, tokenizer, entity_vocab))
        record = log_.resume([_ARROW]) or {"tasks": 0, "offset": 0, "line_no": 0, "counter": {}}
        counter = Counter(record["counter"])
        schema = _schema()
        arrow = stack.enter_context(open(work_dir / _ARROW, "ab"))
        if arrow.tell() == 0:
            arrow.write(schema.serialize().to_pybytes())
        elif record["tasks"]:
            log.info("dataset %s: continuing after %d pages of a previous run", lang,
                     counter["pages"] + counter["skipped.bad_page"])
        batches = _batches(pages_file, record["offset"], record["line_no"])
        positions = collections.deque()

        def lines():
            for batch, offset, line_no in batches:
                positions.append((offset, line_no))
                yield batch

        def results():
            if num_workers <= 1:
                yield from (_arrow_task(processor, batch) for batch in lines())
                return
            # fork shares the (possibly huge) entity vocabulary with the workers without pickling it.
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(num_workers, initializer=_init_worker, initargs=(processor, os.getpid())) as pool:
                yield from _ordered_window(pool, _run_worker, lines(), 4 * num_workers)

        tasks = record["tasks"]
        done = counter["pages"] + counter["skipped.bad_page"]
        with tqdm(total=total, initial=done, unit="pages", desc=f"dataset {lang}", disable=not progress) as bar:
            for batch, stats, _ in results():
                counter.update(stats)
                bar.update(stats["pages"] + stats["skipped.bad_page"])
                arrow.write(batch)
                offset, line_no = positions.popleft()
                tasks += 1
                log_.save({_ARROW: arrow}, tasks=tasks, offset=offset, line_no=line_no,
                          counter=dict(counter))
        arrow.write(_ARROW_END)
        arrow.close()
        bars_were_disabled = datasets.are_progress_bars_disabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            dataset = datasets.Dataset.from_file(str(work_dir / _ARROW))
            # (an empty dataset needs an explicit shard, or load_from_disk fails on it)
            dataset.save_to_disk(str(out_dir), num_shards=None if len(dataset) else 1)
            del dataset
        finally:
            if not bars_were_disabled:
                datasets.enable_progress_bars()
    stats = _stats_dict(counter)
    log.info("dataset %s: %d examples, %d tokens, %d entities", lang, stats["examples"],
             stats["tokens"], stats["entities"])
    return stats


def save_tokenizer(tokenizer, out_dir: Path) -> str:
    """save_pretrained, plus the sentencepiece model when there is one (MLukeTokenizer and slow
    XLM-R tokenizers read it; save_pretrained writes none). Returns the sha256 of tokenizer.json,
    which identifies the tokenizer by content."""
    tokenizer.save_pretrained(out_dir)
    spm_file = getattr(tokenizer, "vocab_file", None)
    if spm_file and Path(spm_file).is_file():
        shutil.copy(spm_file, Path(out_dir) / Path(spm_file).name)
    return sha256_file(Path(out_dir) / "tokenizer.json")


def write_metadata(out_root, tokenizer, tokenizer_name, entity_vocab, limits: DatasetLimits,
                   languages, on_change=None) -> DatasetMetadata:
    """Save the tokenizer to OUT/tokenizer and write OUT/dataset/metadata.json.

    `on_change(new)` (the pipeline's check for stale datasets) is called when metadata.json exists,
    before the new tokenizer replaces the old one.
    """
    data = DataDir(out_root)
    tokenizer = load_tokenizer(tokenizer)
    with atomic_dir(data.tokenizer) as tmp:
        metadata = DatasetMetadata(
            tokenizer=str(tokenizer_name), tokenizer_vocab_size=len(tokenizer),
            tokenizer_sha256=save_tokenizer(tokenizer, tmp), entity_vocab_size=len(entity_vocab),
            entity_vocab_sha256=entity_vocab.sha256, languages=list(languages),
            limits=DatasetLimits(**dataclasses.asdict(limits)),
        )
        if on_change is not None and data.metadata.is_file():
            on_change(metadata)
    metadata.write(out_root)
    return metadata
