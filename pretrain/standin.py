"""Tiny stand-ins for XLM-RoBERTa, built locally so tests and the quickstart never download.

`build_standin_tokenizer` trains a sentencepiece model in-process and wraps it exactly the way
XLM-R's `sentencepiece.bpe.model` is wrapped: fairseq ids `<s>`=0, `<pad>`=1, `</s>`=2,
`<unk>`=3, sentencepiece piece id + 1 for every other piece, `<mask>` last. XLM-R's model is a
*unigram* sentencepiece model despite the file name, and transformers' converter builds a
unigram `tokenizers` model from the file, so the stand-in is trained as unigram too: then the
fast tokenizer's ids equal sentencepiece's own encoding (+1), which a BPE model would not give.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

SPM_FILE = "sentencepiece.bpe.model"
# sentencepiece ids 0..2 become XLM-R's <unk>=3, <s>=0, </s>=2 after the fairseq remapping.
_NUM_SPECIAL = 2  # ids the XLM-R wrapper adds on top of sentencepiece's pieces: <pad>, <mask>


def _lines(texts: Iterable[str]):
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                yield line


def dump_texts(dumps: Iterable[str | Path], max_pages: int | None = None):
    """The raw wikitext of the pages of Wikipedia dumps (the first `max_pages` of each): text in
    every script of the dumps, to train a stand-in tokenizer on."""
    from itertools import islice

    from preprocessing.dumps import iter_pages

    for dump in dumps:
        yield from (page.text for page in islice(iter_pages(dump), max_pages))


def build_standin_tokenizer(out_dir: str | Path, texts: Iterable[str], vocab_size: int = 1000) -> Path:
    """Train a sentencepiece unigram model on `texts` and save an XLM-R tokenizer into `out_dir`.

    `vocab_size` is the size of the resulting XLM-R vocabulary (`len(tokenizer)`, specials
    included) when the texts support that many pieces; smaller texts give a smaller vocabulary.
    `out_dir` then holds `sentencepiece.bpe.model`, `tokenizer.json` and `tokenizer_config.json`
    and loads offline with `AutoTokenizer` or `XLMRobertaTokenizer.from_pretrained(out_dir)`.
    """
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    out_dir = Path(out_dir)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts),
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size - _NUM_SPECIAL,
            hard_vocab_limit=False,  # tiny corpora cannot fill a fixed size
            character_coverage=1.0,  # keep every character of every script (ja, th, ar, hi, ...)
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,  # XLM-R's <pad> is added by the wrapper, not by sentencepiece
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(f"cannot train a stand-in tokenizer with vocab_size={vocab_size}: {e}") from None

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SPM_FILE).write_bytes(model.getvalue())
        config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config))
        tokenizer = XLMRobertaTokenizer.from_pretrained(tmp)
        tokenizer.save_pretrained(out_dir)
        shutil.copy(Path(tmp) / SPM_FILE, out_dir / SPM_FILE)
    return out_dir


def build_tiny_xlmr(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 514,
    seed: int = 0,
) -> Path:
    """Save a randomly initialized `XLMRobertaForMaskedLM` (plus the tokenizer) into `out_dir`."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForMaskedLM

    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = XLMRobertaForMaskedLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    spm_file = Path(tokenizer_dir) / SPM_FILE
    if spm_file.exists():
        shutil.copy(spm_file, out_dir / SPM_FILE)
    return out_dir


def build_synthetic_tokenizer(out_dir: str | Path, vocab_size: int) -> Path:
    """An XLM-R-shaped tokenizer of exactly `vocab_size` ids (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`
    last) whose pieces are made-up words "▁w0", "▁w1", ...: for benchmarks at XLM-R's 250,002 ids without
    training or downloading one. It tokenizes nothing useful."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import XLMRobertaTokenizerFast

    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = [(f"\u2581w{i}", -i / vocab_size) for i in range(vocab_size - len(specials) - 1)]
    backend = Tokenizer(models.Unigram(specials + pieces, unk_id=3))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                        mask_token="<mask>", model_max_length=512)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def build_synthetic_output(out: str | Path, tokenizer_dir: str | Path, entity_vocab_size: int, seq_len: int,
                           entities_per_example: int, examples_per_language: int,
                           languages=("en", "de"), seed: int = 0) -> Path:
    """A preprocessing output (preprocessing/contract.py) of random full-length examples: `seq_len` words
    with `<s>`/`</s>`, `entities_per_example` non-overlapping mentions of 1-4 tokens, ids drawn uniformly. The shapes of a
    real run's batches without running the pipeline (benchmarks of the trainer)."""
    import datasets
    import numpy as np
    from datasets import Dataset
    from transformers import AutoTokenizer

    from preprocessing.contract import SPECIAL_ENTITIES, DataDir, DatasetLimits, DatasetMetadata, features, sha256_file

    data = DataDir(out)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.save_pretrained(data.tokenizer)
    data.root.mkdir(parents=True, exist_ok=True)
    with open(data.entity_vocab, "w", encoding="utf-8") as f:
        for i in range(entity_vocab_size):
            names = [[SPECIAL_ENTITIES[i], lang] if i < len(SPECIAL_ENTITIES) else [f"E{i}", lang] for lang in languages]
            f.write(json.dumps({"id": i, "entities": names, "count": entity_vocab_size - i}) + "\n")
    rng = np.random.default_rng(seed)
    words = seq_len - 2
    stride = max(1, words // max(1, entities_per_example))
    for lang in languages:
        rows = {"word_ids": [], "entity_ids": [], "entity_spans": [], "page_id": [], "language": []}
        for i in range(examples_per_language):
            ids = rng.integers(4, len(tokenizer) - 1, words)
            starts = np.arange(entities_per_example) * stride % words + 1
            lengths = np.minimum(rng.integers(1, 5, entities_per_example), np.minimum(stride, words + 1 - starts))
            rows["word_ids"].append([tokenizer.bos_token_id, *ids.tolist(), tokenizer.eos_token_id])
            rows["entity_ids"].append(rng.integers(len(SPECIAL_ENTITIES), entity_vocab_size,
                                                   entities_per_example).tolist())
            rows["entity_spans"].append(np.stack([starts, starts + lengths], 1).tolist())
            rows["page_id"].append(i)
            rows["language"].append(lang)
        bars = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a bar per save is noise in a benchmark's output
        try:
            Dataset.from_dict(rows, features=features()).save_to_disk(str(data.dataset(lang)))
        finally:
            if bars:
                datasets.enable_progress_bars()
    DatasetMetadata(
        tokenizer=str(tokenizer_dir), tokenizer_vocab_size=len(tokenizer),
        tokenizer_sha256=sha256_file(data.tokenizer / "tokenizer.json"), entity_vocab_size=entity_vocab_size,
        entity_vocab_sha256=sha256_file(data.entity_vocab), languages=list(languages),
        limits=DatasetLimits(max_seq_length=seq_len, max_entity_length=entities_per_example),
    ).write(data.root)
    return data.root
