"""The on-disk contract between preprocessing and pretraining, in one place.

Both sides import it: where each output of `launch/preprocess.py` lives under OUT (`DataDir`),
the dataset limits and `dataset/metadata.json` as typed objects (`DatasetLimits`,
`DatasetMetadata`), the columns of the Arrow datasets, the per-language stats keys, and the
special entities with their ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------- special entities
# entity_vocab.jsonl starts with these, ids 0, 1, 2, as in the reference implementation.
# MLukeTokenizer's entity_vocab.json also holds [MASK2], appended with the next free id (as the
# HF mLUKE conversion does); the model's entity table has a row for it.
PAD, UNK, MASK, MASK2 = "[PAD]", "[UNK]", "[MASK]", "[MASK2]"
SPECIAL_ENTITIES = (PAD, UNK, MASK)
PAD_ID, UNK_ID, MASK_ID = 0, 1, 2

# ---------------------------------------------------------------- dataset columns
# Every example of dataset/<lang>/: word ids with <s> and </s>, entity ids, one [start, end)
# token span into word_ids per entity, the page it comes from and its language.
COLUMNS = ("word_ids", "entity_ids", "entity_spans", "page_id", "language")


def features():
    """The Arrow schema of dataset/<lang>/ (datasets.Features)."""
    import datasets

    ints = datasets.List(datasets.Value("int32"))
    return datasets.Features({
        "word_ids": ints,
        "entity_ids": ints,
        "entity_spans": datasets.List(ints),
        "page_id": datasets.Value("int64"),
        "language": datasets.Value("string"),
    })


# ---------------------------------------------------------------- stats.json
# Per language, in this order; `skipped` is {reason: count} from both stages.
EXTRACT_STAT_KEYS = ("pages", "redirects", "disambiguation", "paragraphs", "links")
DATASET_STAT_KEYS = ("pages", "paragraphs", "sentences", "links", "links_in_vocab", "examples",
                     "tokens", "entities", "truncated_mentions")
STAT_KEYS = ("pages", "redirects", "disambiguation", "skipped", "paragraphs", "sentences", "links",
             "links_in_vocab", "examples", "tokens", "entities")
# What found each disambiguation page: the first three in the wikitext (extract stage), the last
# from Wikidata (items that are instances of Q4167410, "Wikimedia disambiguation page"; the
# JSON dump only), applied by the entity_vocab stage: such pages keep their text but are never
# entities. stats.json holds {signal: pages} per language under DISAMBIGUATION_SIGNALS_KEY.
DISAMBIGUATION_SIGNALS = ("template", "magic_word", "category", "wikidata")
DISAMBIGUATION_SIGNALS_KEY = "disambiguation_signals"
DISAMBIGUATION_SIGNALS_FILE = "disambiguation_signals.tsv"  # in pages/<lang>/: title<TAB>signal


# ---------------------------------------------------------------- paths under OUT
class DataDir:
    """The layout of a preprocessing output directory (OUT)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def pages(self, lang: str) -> Path:
        """pages.jsonl, redirects.tsv, disambiguation.txt (+ disambiguation_signals.tsv), stats.json
        of one language."""
        return self.root / "pages" / lang

    def disambiguation_signals(self, lang: str) -> Path:
        """What found each of the extract stage's disambiguation pages: title<TAB>signal lines."""
        return self.pages(lang) / DISAMBIGUATION_SIGNALS_FILE

    def truncated_pages(self, lang: str) -> Path:
        """The pages read from a truncated dump, kept out of later stages' way."""
        return self.root / "pages" / f"{lang}.truncated"

    @property
    def pages_root(self) -> Path:
        return self.root / "pages"

    @property
    def interwiki(self) -> Path:
        return self.root / "interwiki"

    @property
    def entity_vocab(self) -> Path:
        """entity_vocab.jsonl: LUKE's multilingual form, one entity per line."""
        return self.root / "entity_vocab.jsonl"

    @property
    def hf_entity_vocab(self) -> Path:
        """entity_vocab.json: MLukeTokenizer's flat "lang:title" → id map."""
        return self.root / "entity_vocab.json"

    @property
    def entity_vocab_stats(self) -> Path:
        return self.root / "entity_vocab.stats.json"

    @property
    def dataset_root(self) -> Path:
        return self.root / "dataset"

    def dataset(self, lang: str) -> Path:
        return self.root / "dataset" / lang

    @property
    def metadata(self) -> Path:
        return self.root / "dataset" / "metadata.json"

    @property
    def tokenizer(self) -> Path:
        """The tokenizer the datasets were made with (save_pretrained form)."""
        return self.root / "tokenizer"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"


# ---------------------------------------------------------------- dataset/metadata.json
class MetadataError(Exception):
    """dataset/metadata.json is missing or unreadable; one line naming the file."""


@dataclass
class DatasetLimits:
    """How pages become examples (the `dataset.*` keys of `launch/preprocess.py`). Recorded in
    metadata.json: changing one rebuilds the datasets."""

    max_seq_length: int = 512  # tokens per example, <s> and </s> included
    max_entity_length: int = 128  # entities per example
    max_mention_length: int = 30  # tokens per mention (see long_mentions)
    min_sentence_length: int = 5  # shorter sentences are dropped
    # Keep links whose entity is outside the vocabulary as [UNK] instead of dropping them.
    keep_unknown_entities: bool = False
    # A mention longer than max_mention_length: truncate (keep its first tokens, as the reference and
    # MLukeTokenizer do) or drop (its link is not used).
    long_mentions: str = "truncate"
    # A sentence whose entities would take an example past max_entity_length: split (close the example
    # before it; no link is lost) or truncate (the reference: keep the example's first entities).
    entity_overflow: str = "split"


@dataclass
class DatasetMetadata:
    """What the datasets under OUT/dataset/ were made from. The hashes decide whether datasets are
    current (preprocessing) and whether a model fits them (pretraining)."""

    tokenizer: str  # the name or path it was given as (informational)
    tokenizer_vocab_size: int
    tokenizer_sha256: str  # of OUT/tokenizer/tokenizer.json
    entity_vocab_size: int  # ids in entity_vocab.jsonl ([MASK2] not included)
    entity_vocab_sha256: str  # of entity_vocab.jsonl
    languages: list[str]
    limits: DatasetLimits = field(default_factory=DatasetLimits)

    def to_json(self) -> dict:
        """The file's flat form: the limits sit beside the other keys."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "limits"}
        return {**out, **dataclasses.asdict(self.limits)}

    @classmethod
    def from_json(cls, data: dict, source: str = "metadata.json") -> DatasetMetadata:
        limit_keys = {f.name for f in dataclasses.fields(DatasetLimits)}
        keys = {f.name for f in dataclasses.fields(cls)} - {"limits"}
        missing = sorted((keys | limit_keys) - data.keys())
        if missing:
            raise MetadataError(f"{source}: missing {', '.join(missing)}; rerun the dataset stage of "
                                "launch/preprocess.py (overwrite=true)")
        limits = DatasetLimits(**{k: data[k] for k in limit_keys})
        return cls(**{k: data[k] for k in keys}, limits=limits)

    @classmethod
    def read(cls, out_dir: str | Path) -> DatasetMetadata:
        path = DataDir(out_dir).metadata
        if not path.is_file():
            raise MetadataError(f"{path} not found: expected a preprocessing output (run launch/preprocess.py "
                                "with the dataset stage)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise MetadataError(f"{path}: unreadable ({e}); rerun the dataset stage") from None
        if not isinstance(data, dict):
            raise MetadataError(f"{path}: not a JSON object; rerun the dataset stage")
        return cls.from_json(data, str(path))

    def write(self, out_dir: str | Path) -> Path:
        from .fsutil import atomic_file

        path = DataDir(out_dir).metadata
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
