"""Training data: per-language Arrow datasets, language-smoothed sampling, exact-resume loader.

The sampler turns a seed into one global stream of language draws: draw g picks language l from a
fixed block of draws seeded by (seed, g // BLOCK) with p_l ∝ n_l^alpha, then takes the next
example(s) of l from a per-language permutation seeded by (seed, l, epoch of l). Its whole state
is the number of draws and the per-language counts, so a checkpoint stores it exactly and resuming
is O(1). Every rank follows the same global stream and keeps its own slice of each global
micro-batch, so ranks read different examples. By default one language draw covers a whole
micro-batch, as the reference does (luke/pretraining/batch_generator.py, MultilingualBatchGenerator):
each example is still from language l with probability ∝ n_l^alpha, and per-language training
losses come free; `per_batch=False` draws a language for every example instead.
Masking is seeded per micro-batch from (seed, draw position, rank), so it needs no state either.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from preprocessing.contract import DataDir, DatasetMetadata, MetadataError

BLOCK = 4096
STATE_VERSION = 1


class DataError(Exception):
    """Problem with the training data or its fit to the model; one line, names the file."""


def load_metadata(data_dir: str | Path) -> DatasetMetadata:
    try:
        return DatasetMetadata.read(data_dir)
    except MetadataError as e:
        raise DataError(f"{e} (data.dir must be a preprocessing output)") from None


def check_fits(metadata: DatasetMetadata, model_config, data_dir: str | Path) -> None:
    """The data's tokenizer and entity vocabulary must be the ones the model's tables index."""
    meta_file = DataDir(data_dir).metadata
    if metadata.tokenizer_vocab_size != model_config.vocab_size:
        raise DataError(
            f"{meta_file}: tokenizer has {metadata.tokenizer_vocab_size} ids but the model's word table has "
            f"{model_config.vocab_size}; preprocess with the model's tokenizer (e.g. tokenizer=xlm-roberta-base) "
            "or pick the matching model"
        )
    # The table holds one extra row for [MASK2] (HF mLUKE's entity_vocab.json appends it).
    if model_config.entity_vocab_size != metadata.entity_vocab_size + 1:
        raise DataError(
            f"{meta_file}: entity vocabulary has {metadata.entity_vocab_size} ids but the model's entity table has "
            f"{model_config.entity_vocab_size} rows (vocabulary + [MASK2]); stage 2 must use the data "
            "(entity vocabulary) stage 1 used"
        )
    for key in ("entity_vocab_sha256", "tokenizer_sha256"):  # recorded in the model config at initialization
        trained = getattr(model_config, key, None)
        if trained and trained != getattr(metadata, key):
            raise DataError(f"{meta_file}: {key} differs from the one the model was trained with")


def check_same_tokenizer(xlmr: str, data_dir: str | Path) -> None:
    """The data must be tokenized with this XLM-R's tokenizer (when one is found beside its weights)."""
    from transformers import AutoTokenizer

    try:
        words = AutoTokenizer.from_pretrained(xlmr).get_vocab()
    except (OSError, ValueError):
        return  # no tokenizer beside the weights: check_fits compares the vocabulary sizes
    tokenizer_dir = DataDir(data_dir).tokenizer
    if words != AutoTokenizer.from_pretrained(str(tokenizer_dir)).get_vocab():
        raise DataError(f"{tokenizer_dir}: the data was tokenized with another vocabulary than {xlmr}'s; "
                        f"preprocess with tokenizer={xlmr}")


class PretrainingData:
    """The per-language datasets of a preprocessing output, split into train and held-out eval."""

    def __init__(self, data_dir: str | Path, languages=None, eval_examples: int = 64):
        from datasets import load_from_disk

        self.dir = Path(data_dir)
        self.metadata = load_metadata(self.dir)
        available = list(self.metadata.languages)
        languages = list(languages) if languages else available
        missing = [lang for lang in languages if lang not in available]
        if missing:
            raise DataError(f"language(s) {missing} not in {DataDir(self.dir).metadata} (has {available})")
        self.datasets = {}
        for lang in languages:
            path = DataDir(self.dir).dataset(lang)
            if not path.is_dir():
                raise DataError(f"{path} not found (listed in metadata.json); rerun the dataset stage")
            ds = load_from_disk(str(path))
            if len(ds):
                self.datasets[lang] = ds
        if not self.datasets:
            raise DataError(f"no examples in {DataDir(self.dir).dataset_root} for languages {languages}")
        self.languages = list(self.datasets)
        # Hold out the last examples of each language (at most half of a small language).
        self.num_eval = {l: min(eval_examples, len(d) // 2) for l, d in self.datasets.items()}
        self.num_train = {l: len(d) - self.num_eval[l] for l, d in self.datasets.items()}
        h = hashlib.sha256(json.dumps(self.metadata.to_json(), sort_keys=True).encode())
        for lang, ds in self.datasets.items():
            h.update(f"{lang}:{len(ds)}:{ds._fingerprint}:{self.num_eval[lang]}".encode())
        self.fingerprint = h.hexdigest()[:16]

    def rows(self, lang: str, indices) -> list[dict]:
        cols = self.datasets[lang][list(map(int, indices))]
        keys = list(cols)
        return [dict(zip(keys, vals)) for vals in zip(*(cols[k] for k in keys))]


class LanguageSampler:
    """Deterministic stream of (language, index) draws; see the module docstring."""

    def __init__(self, sizes: dict[str, int], alpha: float, seed: int):
        self.languages = list(sizes)
        self.sizes = np.array([sizes[l] for l in self.languages], dtype=np.int64)
        weights = self.sizes.astype(np.float64) ** alpha
        self.probs = weights / weights.sum()
        self.seed = seed
        self.position = 0
        self.counts = np.zeros(len(self.languages), dtype=np.int64)
        self._block = (-1, None)
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def _languages_of_block(self, block: int) -> np.ndarray:
        if self._block[0] != block:
            rng = np.random.default_rng([self.seed, block])
            self._block = (block, rng.choice(len(self.languages), size=BLOCK, p=self.probs))
        return self._block[1]

    def _perm(self, lang: int, epoch: int) -> np.ndarray:
        cached = self._perms.get(lang)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, 1 + lang, epoch])
            cached = (epoch, rng.permutation(int(self.sizes[lang])).astype(np.int32))  # 4 B per example
            self._perms[lang] = cached
        return cached[1]

    def draw(self, num_units: int, unit: int = 1) -> list[tuple[str, int]]:
        """`num_units` language draws, each followed by `unit` examples of that language."""
        out = []
        for _ in range(num_units):
            lang = int(self._languages_of_block(self.position // BLOCK)[self.position % BLOCK])
            size = int(self.sizes[lang])
            for _ in range(unit):
                k = int(self.counts[lang])
                out.append((self.languages[lang], int(self._perm(lang, k // size)[k % size])))
                self.counts[lang] += 1
            self.position += 1
        return out

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "counts": {l: int(c) for l, c in zip(self.languages, self.counts)},
            "epochs": {l: int(c // s) for l, c, s in zip(self.languages, self.counts, self.sizes)},
        }

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.counts = np.array([int(state["counts"][l]) for l in self.languages], dtype=np.int64)


class TrainLoader:
    """Micro-batches for one rank, prepared ahead by a background thread, resumable exactly.

    `collate(examples, seed)` turns example rows into a batch dict (masking seeded by `seed`).
    Each batch carries the loader state *after* it, so `state_dict()` is the state after the
    last batch the trainer consumed, whatever the thread has prefetched.
    """

    def __init__(self, data: PretrainingData, collate: Callable, micro_batch_size: int, rank: int,
                 world_size: int, seed: int, alpha: float, prefetch: int = 8, per_batch: bool = True):
        self.data = data
        self.collate = collate
        self.micro_batch_size = micro_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.prefetch = prefetch
        self.per_batch = per_batch
        self.sampler = LanguageSampler(data.num_train, alpha, seed)
        self._state = self._full_state()
        self._thread = None

    def _full_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "world_size": self.world_size,
            "micro_batch_size": self.micro_batch_size,
            "per_batch": self.per_batch,
            "fingerprint": self.data.fingerprint,
            "languages": self.data.languages,
            **self.sampler.state_dict(),
        }

    def state_dict(self) -> dict:
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        if self._thread is not None:
            raise RuntimeError("load_state_dict must be called before iterating")
        mine = self._full_state()
        for key, what in (
            ("fingerprint", "the training data changed (data.dir, data.languages or data.eval_examples)"),
            ("micro_batch_size", "trainer.micro_batch_size changed"),
            ("per_batch", "data.sample_languages_by changed"),
            ("seed", "seed changed"),
            ("languages", "the languages changed"),
        ):
            if state.get(key) != mine[key]:
                raise DataError(
                    f"cannot resume exactly: {what} (checkpoint has {key}={state.get(key)!r}, now "
                    f"{mine[key]!r}); use the original settings, or resume=none with a new run_dir"
                )
        self.sampler.load_state_dict(state)
        self._state = self._full_state()

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        try:
            mb, world = self.micro_batch_size, self.world_size
            while not stop.is_set():
                start = self.sampler.position
                if self.per_batch:  # one language per micro-batch (the reference's sampling)
                    draws = self.sampler.draw(world, mb)[self.rank * mb:(self.rank + 1) * mb]
                else:
                    draws = self.sampler.draw(mb * world)[self.rank * mb:(self.rank + 1) * mb]
                examples = self._fetch(draws)
                batch = self.collate(examples, seed=_mix(self.seed, start, self.rank))
                _put(out, (batch, self._full_state(), [l for l, _ in draws]), stop)
        except BaseException as e:  # surfaced in the consumer; never blocks on a full queue nobody reads
            _put(out, e, stop)

    def _fetch(self, draws: list[tuple[str, int]]) -> list[dict]:
        by_lang: dict[str, list[int]] = {}
        for i, (lang, _) in enumerate(draws):
            by_lang.setdefault(lang, []).append(i)
        examples: list = [None] * len(draws)
        for lang, slots in by_lang.items():
            for slot, row in zip(slots, self.data.rows(lang, [draws[s][1] for s in slots])):
                examples[slot] = row
        return examples

    def __iter__(self) -> Iterator[tuple[dict, list[str]]]:
        """Yields (batch, languages of its examples)."""
        q: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(q, stop), daemon=True)
        self._thread.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                batch, self._state, langs = item
                yield batch, langs
        finally:  # the consumer is done (or closed the generator): stop and wait for the thread
            stop.set()
            self._thread.join(timeout=30)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            pass


def eval_batches(data: PretrainingData, collate: Callable, micro_batch_size: int, rank: int,
                 world_size: int, seed: int, max_batches: int = 0):
    """Held-out batches for this rank as (language, batch, real): the same masking every time.

    Every rank yields the same number of batches (collective ZeRO-3 forwards need that); a rank
    with nothing left repeats its first batch with `real=False` so its counts are ignored.
    """
    plan = []
    for li, lang in enumerate(data.languages):
        start = data.num_train[lang]
        idx = list(range(start, start + data.num_eval[lang]))
        for b in range(0, len(idx), micro_batch_size):
            plan.append((lang, li, b, idx[b:b + micro_batch_size]))
    if max_batches:
        plan = plan[:max_batches]
    mine = plan[rank::world_size]
    rounds = -(-len(plan) // world_size)
    for i in range(rounds):
        real = i < len(mine)
        lang, li, b, idx = mine[i] if real else (mine or plan)[0]
        batch = collate(data.rows(lang, idx), seed=_mix(seed, 1_000_003 * (li + 1), b))
        yield lang, batch, real


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash())."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFF for v in values]).generate_state(1, np.uint64)[0] >> 1)
