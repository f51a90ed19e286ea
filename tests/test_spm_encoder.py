"""The sentencepiece tokenizer path gives the fast tokenizer's ids and mention spans: whole
datasets over the 24 languages, odd characters, digits, spacing and link boundaries are equal
both ways; a sentencepiece model that disagrees with tokenizer.json is caught at load time."""

from __future__ import annotations

import json
import logging
import shutil

import datasets
import pytest

from preprocessing.dataset import PageProcessor, build_dataset, load_tokenizer
from preprocessing.spm_encoder import PROBE_TEXTS, SentencePieceEncoder, _root_keys
from pretrain.standin import SPM_FILE, build_standin_tokenizer, dump_texts

LANGUAGES = "ar bn de el en es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh".split()
ODD = [
    "Ｔｏｋｙｏ ｉｓ ＡＢＣ１２３ and ﬁne ① ½ ㍻ ｶﾀｶﾅ",
    "Version 3.14.159 (2024-01-01): 1,234,567 people; 0.5% → 42°C at 09:30.",
    "Spaces  inside\tand\nnewlines,   many   of them .",
    "Café, naïve, e\u0301tude, Hà Nội, Ελλάδα, İstanbul, ß, Æsir.",
    "Zero\u200bwidth and\u00a0non-breaking\u2009spaces; emoji 😀 and 👍🏽.",
    "II III IIII VIII XIII (III.19,13) ... ---- ==== 1111 0000",
]


class _Vocab:
    UNK_ID = 1
    sha256 = "none"

    def lookup(self, lang, title):
        return None  # every link is kept as [UNK] (keep_unknown_entities): spans are what count


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, fixture_dumps):
    corpus = list(PROBE_TEXTS) * 20 + ODD * 20 + list(dump_texts(fixture_dumps.values()))
    return build_standin_tokenizer(tmp_path_factory.mktemp("tok24"), corpus, vocab_size=1500)


def processor(tokenizer, fast=True):
    return PageProcessor("en", _Vocab(), None, load_tokenizer(tokenizer), 512, 128, 30, 1, True,
                         fast_tokenizer=fast)


def test_sentencepiece_path_is_used_and_covers_the_24_languages(tok_dir, caplog):
    with caplog.at_level(logging.INFO):
        fast = processor(str(tok_dir)).fast
    assert fast is not None and "tokenizing with sentencepiece" in caplog.text
    accepted = [i for i, text in enumerate(PROBE_TEXTS[:24])
                if fast._offsets(text, fast.sp.encode(text)) is not None]
    # zh's probe has a full-width comma, which NFKC changes: that sentence goes to tokenizers.
    assert accepted == [i for i in range(24) if i != LANGUAGES.index("zh")]


def _pages():
    """One page per language (its probe text) and per odd text, with links at word starts, inside
    words, on digits, across punctuation and at the end."""
    pages = []
    for page_id, text in enumerate(list(PROBE_TEXTS[:24]) + ODD):
        n = len(text)
        spans = {(0, min(6, n)), (3, min(9, n)), (n // 2, n // 2 + 2), (n - 5, n - 1), (n - 1, n)}
        links = [[a, b, f"T{a}"] for a, b in sorted(spans) if 0 <= a < b <= n]
        paragraphs = [{"text": text, "links": links}, {"text": text + " " + text, "links": []}]
        pages.append({"id": page_id, "title": f"P{page_id}", "paragraphs": paragraphs})
    return pages


def _build(tmp_path, tokenizer, fast, name):
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir(exist_ok=True)
    (pages_dir / "redirects.tsv").write_text("", encoding="utf-8")
    with open(pages_dir / "pages.jsonl", "w", encoding="utf-8") as f:
        for page in _pages():
            f.write(json.dumps(page, ensure_ascii=False) + "\n")
    out = tmp_path / name
    stats = build_dataset(pages_dir, "en", _Vocab(), tokenizer, out, max_seq_length=64,
                          min_sentence_length=1, keep_unknown_entities=True, progress=False,
                          fast_tokenizer=fast)
    return datasets.load_from_disk(str(out)).to_dict(), stats


def test_datasets_built_both_ways_are_identical(tok_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        fast, fast_stats = _build(tmp_path, str(tok_dir), True, "fast")
    assert "tokenizing with sentencepiece" in caplog.text
    slow, slow_stats = _build(tmp_path, str(tok_dir), False, "slow")
    assert fast == slow and fast_stats == slow_stats
    assert fast_stats["entities"] >= 100 and fast_stats["skipped"].get("unaligned_mention", 0) < 10


def _edited_model(tok_dir, tmp_path, edit):
    from sentencepiece import sentencepiece_model_pb2 as pb

    out = tmp_path / "edited"
    shutil.copytree(tok_dir, out)
    model = pb.ModelProto()
    model.ParseFromString((out / SPM_FILE).read_bytes())
    edit(model.normalizer_spec)
    (out / SPM_FILE).write_bytes(model.SerializeToString())
    return out


def test_a_sentencepiece_model_that_normalizes_otherwise_is_caught(tok_dir, tmp_path, caplog):
    """tokenizer.json decides; a sentencepiece.bpe.model beside it whose normalizer differs (here:
    no word-start marker at the start of the text) is found out by the probe texts."""
    edited = _edited_model(tok_dir, tmp_path, lambda spec: setattr(spec, "add_dummy_prefix", False))
    with caplog.at_level(logging.WARNING):
        assert processor(str(edited)).fast is None
    assert "sentencepiece differs from tokenizers on" in caplog.text
    assert "tokenizing with tokenizers" in caplog.text


def test_a_model_without_normalization_still_gives_identical_datasets(tok_dir, tmp_path):
    """Without NFKC in the sentencepiece model, text that NFKC would change is not spelled by known
    pieces, so those sentences go to tokenizers: the dataset is the same."""
    def identity(spec):
        spec.name, spec.precompiled_charsmap = "identity", b""

    edited = _edited_model(tok_dir, tmp_path, identity)
    fast, _ = _build(tmp_path, str(edited), True, "fast")
    slow, _ = _build(tmp_path, str(tok_dir), False, "slow")
    assert fast == slow


def test_no_sentencepiece_model_means_tokenizers(tok_dir, tmp_path, caplog):
    plain = tmp_path / "plain"
    shutil.copytree(tok_dir, plain)
    (plain / SPM_FILE).unlink()
    with caplog.at_level(logging.INFO):
        assert processor(str(plain)).fast is None
    assert "no sentencepiece model file; tokenizing with tokenizers" in caplog.text


def test_ties_between_pieces_of_one_root_are_detected():
    """Two segmentations of "III" into "II"+"I" and "I"+"II" score the same; sentencepiece and
    tokenizers break the tie differently (seen on real enwiki text), so such sentences are
    left to tokenizers."""
    pieces = ["<unk>", "<s>", "</s>", "I", "II", "III", "▁I", "ab", "abab", "ba", "x"]
    keys = _root_keys(pieces)
    assert keys[3] == keys[4] == keys[5] >= 0 and keys[7] == keys[8] >= 0 and keys[7] != keys[3]
    assert keys[6] == keys[9] == keys[10] == -1
    encoder = SentencePieceEncoder.__new__(SentencePieceEncoder)
    encoder.roots = keys
    sentences = [[4, 3], [4, 4, 10], [7, 9], [10, 8, 7], [], [3], [5, 10]]
    assert encoder._ties(sentences) == {0, 3}
    assert encoder._ties([[3], [4]]) == set()  # not across sentences
