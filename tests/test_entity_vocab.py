"""Entity vocabulary: link counts, redirects, disambiguation, QID merges, filters, formats."""

from __future__ import annotations

import hashlib
import json

import pytest

from preprocessing.entity_vocab import EntityVocab, build_entity_vocab, count_entities

# title -> link targets, as extract writes them (normalized, redirects not resolved).
PAGES = {
    "en": {
        "Berlin": ["Germany", "UK", "Deutschland", "Paris", "Paris (disambiguation)", "Atlantis"],
        "Germany": ["Berlin", "Berlin", "Paris"],
        "United Kingdom": ["London"],  # no London article: a red link
        "Paris": [],
        "Tokyo": ["BRD"],  # BRD → Deutschland → Germany
        # Extract never writes disambiguation pages; if one slips in, it is still no entity.
        "Paris (disambiguation)": ["Paris", "Paris (disambiguation)"],
    },
    "ja": {
        "ベルリン": ["ドイツ", "パリ", "東京", "富士山"],
        "ドイツ": ["ベルリン"],
        "パリ": ["ドイツ"],
        "東京都": ["ドイツ"],
        "富士山": [],
    },
    "de": {
        "Berlin": ["Deutschland", "Paris"],
        "Deutschland": ["Berlin"],
        "Paris": ["Deutschland"],
    },
}
REDIRECTS = {
    "en": {"UK": "United Kingdom", "Deutschland": "Germany", "BRD": "Deutschland"},
    "ja": {"東京": "東京都"},
    "de": {},
}
DISAMBIGUATION = {"en": ["Paris (disambiguation)"], "ja": [], "de": []}
INTERWIKI = {  # 富士山 has no QID; en "Tokyo" is never linked
    "en": {"Berlin": "Q64", "Germany": "Q183", "Paris": "Q90", "United Kingdom": "Q145", "Tokyo": "Q1490"},
    "ja": {"ベルリン": "Q64", "ドイツ": "Q183", "パリ": "Q90", "東京都": "Q1490"},
    "de": {"Berlin": "Q64", "Deutschland": "Q183", "Paris": "Q90"},
}
LANGS = ["en", "ja", "de"]


def write_pages_root(root, broken_line=False):
    for lang, pages in PAGES.items():
        d = root / "pages" / lang
        d.mkdir(parents=True)
        with open(d / "pages.jsonl", "w", encoding="utf-8") as f:
            for page_id, (title, targets) in enumerate(pages.items(), 1):
                text, links = "", []
                for target in targets:
                    links.append([len(text), len(text) + len(target), target])
                    text += target + " "
                page = {"id": page_id, "title": title, "paragraphs": [{"text": text, "links": links}]}
                f.write(json.dumps(page, ensure_ascii=False) + "\n")
            if broken_line and lang == "en":
                f.write('{"id": 99, "title": "Broken", "paragraphs": [{"text": "x", "links": [[0, 1\n')
        (d / "redirects.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in REDIRECTS[lang].items()), encoding="utf-8")
        (d / "disambiguation.txt").write_text("".join(t + "\n" for t in DISAMBIGUATION[lang]), encoding="utf-8")
    iw = root / "interwiki"
    iw.mkdir()
    for lang, titles in INTERWIKI.items():
        (iw / f"{lang}.tsv").write_text("".join(f"{t}\t{q}\n" for t, q in titles.items()), encoding="utf-8")
    return root / "pages", iw


def build(tmp_path, name="vocab", interwiki=True, **kwargs):
    pages, iw = (tmp_path / "pages", tmp_path / "interwiki")
    if not pages.exists():
        pages, iw = write_pages_root(tmp_path)
    jsonl, flat = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
    kwargs = {"progress": False, **kwargs}
    stats = build_entity_vocab(pages, LANGS, jsonl, flat, interwiki_dir=iw if interwiki else None, **kwargs)
    items = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    return stats, items, json.loads(flat.read_text(encoding="utf-8")), jsonl


SPECIALS = [
    {"id": 0, "entities": [["[PAD]", "de"], ["[PAD]", "en"], ["[PAD]", "ja"]], "count": 0},
    {"id": 1, "entities": [["[UNK]", "de"], ["[UNK]", "en"], ["[UNK]", "ja"]], "count": 0},
    {"id": 2, "entities": [["[MASK]", "de"], ["[MASK]", "en"], ["[MASK]", "ja"]], "count": 0},
]


def test_count_entities_resolves_redirects_and_skips_non_articles(tmp_path):
    pages, _ = write_pages_root(tmp_path, broken_line=True)
    counts, stats = count_entities(pages / "en")
    # Germany: Berlin→Germany, Berlin→Deutschland(→Germany), Tokyo→BRD(→Deutschland→Germany).
    # Atlantis and London are red links; "Paris (disambiguation)" is a disambiguation page.
    assert counts == {"Germany": 3, "Berlin": 2, "Paris": 3, "United Kingdom": 1}
    assert stats == {"pages": 6, "links": 13, "links_to_articles": 9, "malformed": 1, "entities": 4}


def test_multilingual_vocab_exact(tmp_path):
    stats, items, flat, _ = build(tmp_path, min_num_languages=1)
    assert items == SPECIALS + [
        {"id": 3, "entities": [["Deutschland", "de"], ["Germany", "en"], ["ドイツ", "ja"]], "count": 8, "qid": "Q183"},
        {"id": 4, "entities": [["Paris", "de"], ["Paris", "en"], ["パリ", "ja"]], "count": 5, "qid": "Q90"},
        {"id": 5, "entities": [["Berlin", "de"], ["Berlin", "en"], ["ベルリン", "ja"]], "count": 4, "qid": "Q64"},
        # Ties (count 1) are ordered by their first (lang, title).
        {"id": 6, "entities": [["United Kingdom", "en"]], "count": 1, "qid": "Q145"},
        {"id": 7, "entities": [["富士山", "ja"]], "count": 1},  # no QID: stays per language
        {"id": 8, "entities": [["東京都", "ja"]], "count": 1, "qid": "Q1490"},
    ]
    assert flat == {
        "[PAD]": 0, "[UNK]": 1, "[MASK]": 2,
        "de:Deutschland": 3, "en:Germany": 3, "ja:ドイツ": 3,
        "de:Paris": 4, "en:Paris": 4, "ja:パリ": 4,
        "de:Berlin": 5, "en:Berlin": 5, "ja:ベルリン": 5,
        "en:United Kingdom": 6, "ja:富士山": 7, "ja:東京都": 8,
        "[MASK2]": 9,
    }
    assert stats["entities"] == 9
    assert (stats["candidates"], stats["with_qid"], stats["dropped_min_num_languages"], stats["dropped_size"]) == (6, 5, 0, 0)
    assert stats["languages"]["ja"] == {"pages": 5, "links": 7, "links_to_articles": 7, "malformed": 0, "entities": 5}


def test_min_num_languages_and_size(tmp_path):
    stats, items, flat, _ = build(tmp_path, min_num_languages=3)
    assert [(i["id"], i.get("qid"), i["count"]) for i in items] == [
        (0, None, 0), (1, None, 0), (2, None, 0), (3, "Q183", 8), (4, "Q90", 5), (5, "Q64", 4)]
    assert (stats["dropped_min_num_languages"], stats["dropped_size"]) == (3, 0)
    # size counts the special entities, as in the reference.
    stats, items, flat, _ = build(tmp_path, name="small", min_num_languages=2, size=5)
    assert [i.get("qid") for i in items] == [None, None, None, "Q183", "Q90"]
    assert (stats["dropped_min_num_languages"], stats["dropped_size"], stats["entities"]) == (3, 1, 5)
    assert flat["[MASK2]"] == 5 and max(flat.values()) == 5


def test_each_language_is_cut_to_its_most_linked_entities_before_the_merge(tmp_path):
    # 2 titles per language (+ the 3 special entities, as the reference counts): en keeps Germany and Paris
    # (3 links each), ja ドイツ and パリ (ties at 1 link by title), de Deutschland and Berlin.
    stats, items, _, _ = build(tmp_path, min_num_languages=1, per_language_size=5)
    assert items[3:] == [
        {"id": 3, "entities": [["Deutschland", "de"], ["Germany", "en"], ["ドイツ", "ja"]], "count": 8, "qid": "Q183"},
        {"id": 4, "entities": [["Paris", "en"], ["パリ", "ja"]], "count": 4, "qid": "Q90"},
        {"id": 5, "entities": [["Berlin", "de"]], "count": 1, "qid": "Q64"},
    ]
    assert stats["dropped_per_language_size"] == {"en": 2, "ja": 3, "de": 1}


def test_without_interwiki_entities_stay_per_language(tmp_path):
    _, items, flat, _ = build(tmp_path, interwiki=False, min_num_languages=1, size=8)
    assert [(i["entities"], i["count"]) for i in items[3:]] == [
        ([["Germany", "en"]], 3), ([["Paris", "en"]], 3), ([["ドイツ", "ja"]], 3),
        ([["Deutschland", "de"]], 2), ([["Berlin", "en"]], 2)]
    assert all("qid" not in i for i in items)
    assert flat["en:Berlin"] == 7 and "de:Berlin" not in flat


def test_deterministic_and_parallel(tmp_path):
    *_, first = build(tmp_path, name="a", min_num_languages=1)
    *_, second = build(tmp_path, name="b", min_num_languages=1, num_workers=2)
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_entity_vocab_class(tmp_path):
    *_, jsonl = build(tmp_path, min_num_languages=1)
    vocab = EntityVocab.load(jsonl)
    assert len(vocab) == 9 and vocab.mask2_id == 9
    assert (vocab.PAD_ID, vocab.UNK_ID, vocab.MASK_ID) == (0, 1, 2)
    assert vocab.lookup("ja", "ドイツ") == vocab.lookup("de", "Deutschland") == 3
    assert vocab.lookup("ja", "[MASK]") == 2
    assert vocab.lookup("en", "Atlantis") is None and vocab.lookup("fr", "Paris") is None
    assert vocab.sha256 == hashlib.sha256(jsonl.read_bytes()).hexdigest()

    lines = jsonl.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:4] + lines[5:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl line 5: id 5, expected 4"):
        EntityVocab.load(bad)


def test_missing_extract_output(tmp_path):
    pages, iw = write_pages_root(tmp_path)
    (pages / "ja" / "redirects.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"ja/redirects\.tsv is missing"):
        build_entity_vocab(pages, LANGS, tmp_path / "v.jsonl", tmp_path / "v.json", iw, progress=False)


def test_mluke_tokenizer_loads_the_json(tmp_path):
    from transformers import MLukeTokenizer

    *_, jsonl = build(tmp_path, min_num_languages=1)
    pieces = [("<unk>", 0.0)] + [(f"▁{w}", -1.0) for w in ("Berlin", "liegt", "in", "Deutschland")]
    tokenizer = MLukeTokenizer(vocab=pieces, entity_vocab_file=str(tmp_path / "vocab.json"))
    assert (tokenizer.entity_pad_token_id, tokenizer.entity_unk_token_id,
            tokenizer.entity_mask_token_id, tokenizer.entity_mask2_token_id) == (0, 1, 2, 9)
    enc = tokenizer("Berlin liegt in Deutschland", entities=["de:Berlin", "ja:ドイツ"],
                    entity_spans=[(0, 6), (16, 27)])
    assert enc["entity_ids"] == [5, 3]
    assert tokenizer("Berlin", entities=["fr:Berlin"], entity_spans=[(0, 6)])["entity_ids"] == [1]


def test_warns_when_nothing_is_left(tmp_path, caplog):
    stats, items, flat, _ = build(tmp_path, interwiki=False, min_num_languages=3)
    assert items == SPECIALS and flat == {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[MASK2]": 3}
    assert "without a Wikidata dump every entity is in one language" in caplog.text
