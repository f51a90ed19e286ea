"""Dataset stage: mention token spans, packing limits, entity handling, determinism."""

import json

import datasets
import pytest
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from preprocessing.dataset import build_dataset, write_metadata
from preprocessing.entity_vocab import EntityVocab
from pretrain.standin import build_standin_tokenizer

CORPUS = [
    "Berlin is a city in Germany.",
    "The Germans live in Germany.",
    "The United States of America is a country.",
    "Tokyo is the capital of Japan.",
    "東京は日本の首都です。",
    "東京都は大きい。",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "नई दिल्ली भारत की राजधानी है।",
    "القاهرة هي عاصمة مصر.",
]
SENTENCE = "Berlin is a city in Germany."  # links: Berlin [0, 6), Germany [20, 27)
VOCAB = {  # id -> titles; ids 0-2 are [PAD], [UNK], [MASK]
    3: [("Berlin", "en")],
    4: [("Germany", "en"), ("ドイツ", "ja")],
    5: [("United States", "en")],
    6: [("東京", "ja"), ("Tokyo", "en")],
    7: [("日本", "ja")],
}


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    return build_standin_tokenizer(tmp_path_factory.mktemp("tok"), CORPUS * 10, vocab_size=300)


@pytest.fixture(scope="module", params=["transformers", "metaspace"])
def tokenizer(request, standin_dir):
    """XLM-R as transformers builds it (a word's "▁" has the word's offsets), and as a
    tokenizer.json with a plain Metaspace pre-tokenizer (its "▁" has the space's offset)."""
    xlmr = AutoTokenizer.from_pretrained(standin_dir)
    if request.param == "transformers":
        return xlmr
    backend = Tokenizer.from_str(xlmr.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    assert tok(CORPUS)["input_ids"] == xlmr(CORPUS)["input_ids"]
    enc = tok("The Germans", add_special_tokens=False, return_offsets_mapping=True)
    assert enc.tokens()[3] == "▁German" and enc["offset_mapping"][3] == (3, 10)  # " German"
    return tok


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "entity_vocab.jsonl"
    rows = [{"id": i, "entities": [[name, None]], "count": 0} for i, name in enumerate(["[PAD]", "[UNK]", "[MASK]"])]
    rows += [{"id": i, "entities": [list(t) for t in titles], "count": 10 - i} for i, titles in VOCAB.items()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return EntityVocab.load(path)


def link(text, anchor, title, nth=0):
    start = -1
    for _ in range(nth + 1):
        start = text.index(anchor, start + 1)
    return [start, start + len(anchor), title]


def write_pages(root, pages, redirects=""):
    root.mkdir(parents=True, exist_ok=True)
    (root / "redirects.tsv").write_text(redirects, encoding="utf-8")
    with open(root / "pages.jsonl", "w", encoding="utf-8") as f:
        for page in pages:
            f.write((page if isinstance(page, str) else json.dumps(page, ensure_ascii=False)) + "\n")
    return root


def page(page_id, *paragraphs):
    return {"id": page_id, "title": f"P{page_id}",
            "paragraphs": [{"text": t, "links": links} for t, links in paragraphs]}


def berlin_paragraph(n):
    text = " ".join([SENTENCE] * n)
    links = [link(text, "Berlin", "Berlin", i) for i in range(n)] + [link(text, "Germany", "Germany", i) for i in range(n)]
    return text, sorted(links)


def build(tmp_path, lang, pages, tokenizer, vocab, redirects="", **kwargs):
    kwargs.setdefault("progress", False)
    pages_dir = write_pages(tmp_path / "pages" / lang, pages, redirects)
    out = tmp_path / "out" / lang
    stats = build_dataset(pages_dir, lang, vocab, tokenizer, out, **kwargs)
    return datasets.load_from_disk(str(out)), stats


def mentions(ds, tokenizer):
    return [(tokenizer.decode(ex["word_ids"][s:e]).strip(), eid)
            for ex in ds for (s, e), eid in zip(ex["entity_spans"], ex["entity_ids"])]


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_mentions_decode_to_their_anchor_text(tmp_path, tokenizer, vocab):
    en = "The United States of America is a country. Tokyo and Berlin are cities, Germans live in Germany."
    pages = [page(1, (en, [link(en, "United States of America", "USA"), link(en, "Tokyo", "Tokyo"),
                           link(en, "Berlin", "Berlin"), link(en, "German", "Germany"),
                           link(en, "Germany", "Germany")]))]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, redirects="USA\tUnited States\n")
    assert mentions(ds, tokenizer) == [("United States of America", 5), ("Tokyo", 6), ("Berlin", 3),
                                       ("German", 4), ("Germany", 4)]
    assert ds.features["word_ids"].feature.dtype == "int32"
    assert ds.features["entity_spans"].feature.feature.dtype == "int32"
    assert ds[0]["page_id"] == 1 and ds[0]["language"] == "en"
    assert ds[0]["word_ids"][0] == tokenizer.bos_token_id and ds[0]["word_ids"][-1] == tokenizer.eos_token_id
    assert stats["links"] == 5 and stats["links_in_vocab"] == 5 and stats["entities"] == 5


def test_link_across_a_sentence_boundary_merges_the_sentences(tmp_path, tokenizer, vocab):
    text = "Berlin is a city in Germany. The Germans live in Germany."
    pages = [page(1, (text, [link(text, "Germany. The Germans", "Germany")]))]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab)
    assert mentions(ds, tokenizer) == [("Germany. The Germans", 4)]
    assert stats["sentences"] == 1
    ds, stats = build(tmp_path, "en", [page(1, (text, []))], tokenizer, vocab)
    assert stats["sentences"] == 2


def test_link_boundary_inside_a_token_splits_only_that_token(tmp_path, tokenizer, vocab):
    text = "東京都は日本の首都です。"
    natural = tokenizer.tokenize(text)
    assert natural[0] == "▁東京"  # "東" alone is inside this token
    pages = [page(1, (text, [link(text, "東", "東京"), link(text, "京都", "東京"), link(text, "日本", "日本")]))]
    ds, stats = build(tmp_path, "ja", pages, tokenizer, vocab, min_sentence_length=1)
    assert mentions(ds, tokenizer) == [("東", 6), ("京都", 6), ("日本", 7)]
    tokens = tokenizer.convert_ids_to_tokens(ds[0]["word_ids"][1:-1])
    assert "".join(tokens) == "".join(natural)  # same characters, same word-start marker
    assert tokens[:3] == ["▁東", "京", "都"] or tokens[:4] == ["▁", "東", "京", "都"]
    assert tokens[-len(natural) + 2:] == natural[2:]  # the rest keeps its natural tokenization
    assert stats["skipped"] == {}


def test_lone_word_start_marker_belongs_to_the_mention(tmp_path, tokenizer, vocab):
    text = "The capital is Tokyo and Berlin."
    assert tokenizer.tokenize("Berlin")[:2] == ["▁", "B"]  # a lone "▁", then a piece without it
    pages = [page(1, (text, [link(text, "Berlin", "Berlin")]))]
    ds, _ = build(tmp_path, "en", pages, tokenizer, vocab)
    (s, e), = ds[0]["entity_spans"]
    assert tokenizer.convert_ids_to_tokens(ds[0]["word_ids"][s:e])[0] == "▁"
    assert ds[0]["word_ids"][1:-1] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_packing_respects_token_limit(tmp_path, tokenizer, vocab):
    length = n_tokens(tokenizer, SENTENCE)
    ds, stats = build(tmp_path, "en", [page(7, berlin_paragraph(5))], tokenizer, vocab,
                      max_seq_length=2 * length + 2)
    assert [len(ex["word_ids"]) for ex in ds] == [2 * length + 2, 2 * length + 2, length + 2]
    assert [ex["entity_ids"] for ex in ds] == [[3, 4, 3, 4], [3, 4, 3, 4], [3, 4]]
    assert mentions(ds, tokenizer) == [("Berlin", 3), ("Germany", 4)] * 5
    assert stats["examples"] == 3 and stats["entities"] == 10 and stats["sentences"] == 5
    assert stats["tokens"] == 5 * length + 6


def test_packing_respects_entity_limit(tmp_path, tokenizer, vocab):
    ds, stats = build(tmp_path, "en", [page(7, berlin_paragraph(5))], tokenizer, vocab, max_entity_length=3)
    assert [ex["entity_ids"] for ex in ds] == [[3, 4]] * 5  # a third sentence would exceed 3 entities
    ds, stats = build(tmp_path, "en", [page(7, berlin_paragraph(2))], tokenizer, vocab, max_entity_length=1)
    assert [ex["entity_ids"] for ex in ds] == [[3], [3]]  # one sentence alone holds 2: cut
    assert stats["skipped"] == {"entity_overflow": 2}
    # The reference packs by tokens only and keeps an example's first entities.
    ds, stats = build(tmp_path, "en", [page(7, berlin_paragraph(5))], tokenizer, vocab, max_entity_length=3,
                      entity_overflow="truncate")
    assert [ex["entity_ids"] for ex in ds] == [[3, 4, 3]] and stats["skipped"] == {"entity_overflow": 7}


def test_mention_and_sentence_length_limits(tmp_path, tokenizer, vocab):
    text = "The United States of America is a country."
    usa = n_tokens(tokenizer, "United States of America")
    pages = [page(1, (text, [link(text, "United States of America", "United States")]))]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, max_mention_length=usa)
    assert mentions(ds, tokenizer) == [("United States of America", 5)]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, max_mention_length=usa - 1, long_mentions="drop")
    assert len(ds) == 0 and stats["skipped"] == {"long_mention": 1, "example_without_entities": 1}
    # By default a long mention keeps its first tokens, as the reference (and MLukeTokenizer) do.
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, max_mention_length=usa - 1)
    (start, end), = ds[0]["entity_spans"]
    assert end - start == usa - 1 and ds[0]["entity_ids"] == [5]
    assert ds[0]["word_ids"][start:end] == tokenizer("United States of America", add_special_tokens=False)[
        "input_ids"][:usa - 1]
    assert stats["truncated_mentions"] == 1 and stats["skipped"] == {}

    length = n_tokens(tokenizer, SENTENCE)
    pages = [page(1, berlin_paragraph(2))]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, max_seq_length=length + 1)
    assert len(ds) == 0 and stats["skipped"] == {"long_sentence": 2}
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, min_sentence_length=length + 1)
    assert len(ds) == 0 and stats["skipped"] == {"short_sentence": 2}
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, max_seq_length=length + 2, min_sentence_length=length)
    assert [len(ex["word_ids"]) for ex in ds] == [length + 2] * 2


def test_examples_without_entities_are_dropped(tmp_path, tokenizer, vocab):
    plain = "Nothing is linked in this sentence at all."
    length = max(n_tokens(tokenizer, SENTENCE), n_tokens(tokenizer, plain))  # one sentence per example
    pages = [page(1, (plain, [])), page(2, (plain, []), berlin_paragraph(1))]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, max_seq_length=length + 2)
    assert [ex["page_id"] for ex in ds] == [2]
    assert stats["skipped"] == {"example_without_entities": 2}
    assert stats["pages"] == 2 and stats["paragraphs"] == 3 and stats["examples"] == 1


@pytest.mark.parametrize("keep", [False, True])
def test_unknown_entities(tmp_path, tokenizer, vocab, keep):
    text = "Berlin is a city in Atlantis."
    pages = [page(1, (text, [link(text, "Berlin", "Berlin"), link(text, "Atlantis", "Atlantis")]))]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab, keep_unknown_entities=keep)
    expected = [("Berlin", 3), ("Atlantis", EntityVocab.UNK_ID)] if keep else [("Berlin", 3)]
    assert mentions(ds, tokenizer) == expected
    assert stats["links"] == 2 and stats["links_in_vocab"] == 1 and stats["entities"] == len(expected)


def test_bad_input_is_counted_not_fatal(tmp_path, tokenizer, vocab):
    text, links = berlin_paragraph(1)
    links[0][1] += 1  # "Berlin " : whitespace around an anchor is not part of the mention
    pages = ["{not json", page(2, (text, links + [[5, 999, "Berlin"], [3, 3, "Berlin"], [6, 7, "Berlin"]])),
             {"id": 3, "title": "no paragraphs"}]
    ds, stats = build(tmp_path, "en", pages, tokenizer, vocab)
    assert mentions(ds, tokenizer) == [("Berlin", 3), ("Germany", 4)]
    assert stats["pages"] == 1 and stats["skipped"] == {"bad_page": 2, "bad_link": 3}
    with pytest.raises(FileNotFoundError, match="pages.jsonl"):
        build_dataset(tmp_path / "nowhere", "en", vocab, tokenizer, tmp_path / "o")


def test_workers_give_the_same_dataset(tmp_path, tokenizer, vocab):
    ja = "東京は日本の首都です。東京都は大きい。"
    pages = []
    for i in range(80):  # several tasks of PAGES_PER_TASK pages
        if i % 3 == 0:
            pages.append(page(i, (ja, [link(ja, "東京", "Tokyo"), link(ja, "都", "Tokyo", 1)])))
        else:
            pages.append(page(i, berlin_paragraph(1 + i % 4)))
    one, stats_one = build(tmp_path / "a", "en", pages, tokenizer, vocab, num_workers=1, max_seq_length=40)
    two, stats_two = build(tmp_path / "b", "en", pages, tokenizer, vocab, num_workers=2, max_seq_length=40)
    assert one.to_dict() == two.to_dict() and stats_one == stats_two
    assert len(one) > 80 and one["page_id"] == sorted(one["page_id"])


def test_write_metadata_saves_the_tokenizer(tmp_path, tokenizer, vocab):
    from preprocessing.config import PreprocessConfig

    cfg = PreprocessConfig(out_dir=str(tmp_path))
    meta = write_metadata(tmp_path, tokenizer, "my-tokenizer", vocab, cfg.dataset, ["en", "ja"]).to_json()
    assert json.loads((tmp_path / "dataset" / "metadata.json").read_text()) == meta
    assert meta["tokenizer"] == "my-tokenizer" and meta["tokenizer_vocab_size"] == len(tokenizer)
    assert meta["entity_vocab_size"] == len(vocab) == 8 and meta["entity_vocab_sha256"] == vocab.sha256
    assert (meta["max_seq_length"], meta["max_entity_length"], meta["max_mention_length"]) == (512, 128, 30)
    assert meta["languages"] == ["en", "ja"] and len(meta["tokenizer_sha256"]) == 64
    if getattr(tokenizer, "vocab_file", None):  # transformers' XLM-R keeps its sentencepiece model next to it
        assert (tmp_path / "tokenizer" / "sentencepiece.bpe.model").is_file()
    saved = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert saved(CORPUS)["input_ids"] == tokenizer(CORPUS)["input_ids"]


def test_worker_results_are_consumed_in_order_within_a_bounded_window():
    # Memory stays flat: never more than `window` batches read ahead of the consumer.
    from multiprocessing.pool import ThreadPool

    from preprocessing.dataset import _ordered_window

    pulled = []

    def items():
        for i in range(50):
            pulled.append(i)
            yield i

    with ThreadPool(3) as pool:
        out = []
        for result in _ordered_window(pool, lambda x: x * x, items(), window=4):
            assert len(pulled) - len(out) <= 4
            out.append(result)
    assert out == [i * i for i in range(50)]
