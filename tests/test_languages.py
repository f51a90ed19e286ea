"""Any Wikipedia language: Bulgarian (outside the default 24) from its own <siteinfo>, the
disambiguation signals, and a 25-language run through the dataset stage whose entity
vocabulary is the same from the Wikidata JSON dump and from the sitelinks SQL table."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import datasets
import pytest

from preprocessing.config import LANGUAGES, PreprocessConfig
from preprocessing.extract import extract_dump
from preprocessing.interwiki import wikidata_site
from preprocessing.pipeline import PreprocessError, run_pipeline, validate
from preprocessing.sentences import icu_locale_id, sentence_spans
from preprocessing.wikitext import WikitextParser, disambiguation_signal, parse_wikitext

SAMPLE = Path(__file__).resolve().parents[1] / "sample"
BG = SAMPLE / "more" / "bgwiki-sample.xml"
EXTRACT_FILES = ("pages.jsonl", "redirects.tsv", "disambiguation.txt", "stats.json",
                 "disambiguation_signals.tsv")


def utf16(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / path.name.replace(".xml", "-utf16.xml")
    out.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))  # with a BOM
    return out


def texts_and_links(out: Path) -> dict[str, list[tuple[str, list[tuple[str, str]]]]]:
    pages = {}
    for line in (out / "pages.jsonl").read_text(encoding="utf-8").splitlines():
        page = json.loads(line)
        pages[page["title"]] = [(p["text"], [(p["text"][s:e], t) for s, e, t in p["links"]])
                                for p in page["paragraphs"]]
    return pages


# ------------------------------------------------------------------------------ language codes
def _cfg(tmp_path, dumps) -> PreprocessConfig:
    return PreprocessConfig(out_dir=str(tmp_path), dumps=dumps, stages=["extract"], progress=False)


def test_any_plausible_wikipedia_code_is_accepted(tmp_path, caplog):
    dumps = {code: str(BG) for code in ("bg", "zh-yue", "be-tarask", "be-x-old", "simple", "zh-min-nan",
                                        "xqz")}
    with caplog.at_level(logging.WARNING):
        assert validate(_cfg(tmp_path, dumps)) == list(dumps)
    # A code of the right form that no Wikipedia had when this was written: a warning, no error.
    assert "'xqz' is not among the Wikipedias this version knows" in caplog.text
    assert "'bg'" not in caplog.text and "'zh-yue'" not in caplog.text


@pytest.mark.parametrize("code", ["english", "EN", "en_US", "bgwiki", "e", "1", "en-", "zh yue", "zh--yue"])
def test_implausible_code_fails_before_any_work(tmp_path, code):
    with pytest.raises(PreprocessError) as err:
        validate(_cfg(tmp_path, {code: str(BG)}))
    message = str(err.value)
    assert message.startswith(f"unknown language key(s) in dumps: {code}; expected Wikipedia")
    assert "\n" not in message and "e.g. en, bg, zh-yue" in message
    assert not (tmp_path / "pages").exists()


def test_wikidata_site_ids():
    assert [wikidata_site(c) for c in ("en", "bg", "zh-yue", "zh-min-nan", "simple", "be-tarask")] == [
        "enwiki", "bgwiki", "zh_yuewiki", "zh_min_nanwiki", "simplewiki", "be_x_oldwiki"]


# ------------------------------------------------------------------------------ Bulgarian
BG_BERLIN = [
    ("Берлин е столицата и най-големият град на Германия. С около 3,9 милиона жители той е "
     "най-населеният град в Европейския съюз. Градът лежи на реките Шпрее и Хафел.",
     [("столицата", "Столица"), ("Германия", "Германия"), ("Европейския съюз", "Европейски съюз"),
      ("Шпрее", "Шпрее"), ("Хафел", "Хафел")]),
    # [[Файл:...]] (siteinfo), [[Image:...]] (English canonical alias) and categories are dropped;
    # [[Уикипедия:...]] and [[Шаблон:...]] (siteinfo) keep their text without a link.
    ("Берлин се намира в Европа, на около 880 км от Париж и 930 км от Лондон. Токио е "
     "побратимен град на Берлин. Вижте също правилата и шаблона.",
     [("Европа", "Европа"), ("Париж", "Париж"), ("Лондон", "Лондон"), ("Токио", "Токио")]),
]


def test_bulgarian_dump_utf8_and_utf16(tmp_path):
    stats = extract_dump(BG, "bg", tmp_path / "utf8", num_workers=1, progress=False)
    assert stats == {"pages": 7, "redirects": 2, "disambiguation": 1, "paragraphs": 15, "links": 33,
                     "skipped": {}, "other_namespaces": 1, "truncated": False}
    out = tmp_path / "utf8"
    pages = texts_and_links(out)
    assert list(pages) == ["Берлин", "Германия", "Париж", "Франция", "Лондон", "Токио",
                           "Париж (пояснение)"]
    assert pages["Берлин"] == BG_BERLIN
    # [[Медия:...]] (ns -2 in siteinfo) is a file link: dropped with its text.
    assert pages["Германия"][1] == ("Германия е член на Европейския съюз. се изпълнява на "
                                    "официални събития.", [("Европейския съюз", "Европейски съюз")])
    everything = (out / "pages.jsonl").read_text(encoding="utf-8")
    for hidden in ("Категория", "Category", "Файл", "Image", "мини", "Карта", "Brandenburger", "Химн"):
        assert hidden not in everything, hidden
    # <redirect title=...> and an old-style page with only "#пренасочване [[...]]".
    assert (out / "redirects.tsv").read_text(encoding="utf-8") == "ФРГ\tГермания\nГрад на светлината\tПариж\n"
    # __DISAMBIG__ (English, valid on every wiki); {{Пояснение}} alone is not known here.
    assert (out / "disambiguation.txt").read_text(encoding="utf-8") == "Берлин (пояснение)\n"
    assert (out / "disambiguation_signals.tsv").read_text(encoding="utf-8") == "Берлин (пояснение)\tmagic_word\n"

    extract_dump(utf16(BG, tmp_path), "bg", tmp_path / "utf16", num_workers=2, progress=False)
    for name in EXTRACT_FILES:
        assert (tmp_path / "utf16" / name).read_bytes() == (out / name).read_bytes(), name


def test_language_is_the_config_key_not_the_siteinfo_dbname(tmp_path):
    other = tmp_path / "bgwiki-misnamed.xml"
    text = BG.read_text(encoding="utf-8")
    assert "<dbname>bgwiki</dbname>" in text and 'xml:lang="bg"' in text
    other.write_text(text.replace("<dbname>bgwiki</dbname>", "<dbname>enwiki</dbname>")
                     .replace('xml:lang="bg"', 'xml:lang="en"'), encoding="utf-8")
    extract_dump(BG, "bg", tmp_path / "a", num_workers=1, progress=False)
    extract_dump(other, "bg", tmp_path / "b", num_workers=1, progress=False)
    for name in EXTRACT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


SITEINFO_BG = {-2: "Медия", 4: "Уикипедия", 6: "Файл", 10: "Шаблон", 14: "Категория"}


def _parse(parser: WikitextParser, text: str):
    return [(p.text, [(p.text[s:e], t) for s, e, t in p.links]) for p in parser.parse(text)]


def test_siteinfo_namespaces_first_hard_coded_tables_as_fallback():
    text = "[[Файл:A.jpg|мини|Снимка]] Текст [[Категория:Градове]] [[Шаблон:Б|шаблон]] [[Град]]ове."
    assert _parse(WikitextParser("bg", SITEINFO_BG), text) == [
        ("Текст шаблон Градове.", [("Градове", "Град")])]
    # No siteinfo and no table for bg: "Категория" and "Файл" are not known namespaces (ru's
    # "Шаблон" is, from the table of other namespaces).
    assert _parse(WikitextParser("bg"), text) == [
        ("мини|Снимка Текст Категория:Градове шаблон Градове.",
         [("мини|Снимка", "Файл:A.jpg"), ("Категория:Градове", "Категория:Градове"), ("Градове", "Град")])]
    # The English canonical names work on every wiki, with or without a siteinfo.
    english = "[[File:A.jpg|thumb|x]][[Image:B.png]][[Media:C.ogg|y]]Текст[[Category:Z]]"
    assert _parse(WikitextParser("bg", SITEINFO_BG), english) == [("Текст", [])]
    assert _parse(WikitextParser("bg"), english) == [("Текст", [])]
    # A siteinfo name wins over the tables: here "Kategorie" names the template namespace.
    assert _parse(WikitextParser("de", {10: "Kategorie"}), "[[Kategorie:X|Text]] hier") == [
        ("Text hier", [])]
    assert _parse(WikitextParser("de"), "[[Kategorie:X|Text]] hier") == [("hier", [])]


def anchors(text: str, lang: str) -> list[tuple[str, str]]:
    return [(p.text[s:e], t) for p in parse_wikitext(text, lang) for s, e, t in p.links]


def test_link_trails_stop_at_scripts_written_without_spaces():
    assert anchors("Жителите на [[Берлин]]ските квартали.", "bg") == [("Берлинските", "Берлин")]
    # zh-yue, wuu, lo, my...: no trail into the words after the link; Latin trails still join.
    assert anchors("[[香港]]係一個城市，[[Hong Kong]]ers", "zh-yue") == [
        ("香港", "香港"), ("Hong Kongers", "Hong Kong")]
    assert anchors("[[ວຽງຈັນ]]ແມ່ນນະຄອນຫຼວງ", "lo") == [("ວຽງຈັນ", "ວຽງຈັນ")]
    assert anchors("[[ရန်ကုန်]]မြို့", "my") == [("ရန်ကုန်", "ရန်ကုန်")]


@pytest.mark.parametrize("lang, text, signal", [
    ("bg", "Париж може да означава:\n* [[Париж]]\n__DISAMBIG__", "magic_word"),
    ("mk", "__ПОЈАСНУВАЊЕ__", "magic_word"),
    ("he", "__פירושונים__", "magic_word"),
    ("nb", "__PEKER__", "magic_word"),
    ("diq", "_MANEYOBİN_", "magic_word"),
    ("bg", "{{Disambiguation}}", "template"),
    ("de", "{{Begriffsklärung}} __DISAMBIG__", "template"),  # the first signal tried
    ("bg", "[[Category:Disambiguation pages]]", "category"),
    ("bg", "{{Пояснение}}", None),  # bg's template: only Wikidata's Q4167410 knows (see below)
    ("bg", "__NOTOC__ Париж", None),
])
def test_disambiguation_signals(lang, text, signal):
    assert disambiguation_signal(text, lang) == signal


def test_disambiguation_category_named_by_siteinfo():
    text = "[[Kategorija:Disambiguation]]"
    assert disambiguation_signal(text, "xqz") is None
    assert disambiguation_signal(text, "xqz", {14: "Kategorija"}) == "category"


def test_sentences_any_code():
    assert [icu_locale_id(c) for c in ("bg", "simple", "zh-yue", "be-tarask", "en", "xqz")] == [
        "bg", "en@ss=standard", "yue", "be", "en@ss=standard", "xqz"]
    text = "Берлин е град. Той е голям! Дали?"
    assert sentence_spans(text, "bg") == [(0, 14), (15, 27), (28, 33)]
    assert sentence_spans(text, "xqz") == sentence_spans(text, "bg")  # ICU's root rules
    # Simple English is English: "Mr." is no sentence end.
    assert len(sentence_spans("Mr. Smith went home. He slept.", "simple")) == 2
    # Lao, like Thai, ends sentences with a space only: long clauses split there.
    clause = "ວຽງຈັນແມ່ນນະຄອນຫຼວງຂອງປະເທດລາວ" * 3
    assert len(sentence_spans(f"{clause} {clause}", "lo")) == 2


# ------------------------------------------------------------------------------ 25 languages
OTHER = [lang for lang in LANGUAGES if not (SAMPLE / "dumps" / f"{lang}wiki-sample.xml").exists()]


def generated_dump(path: Path, lang: str) -> Path:
    """A small dump without <siteinfo> (the hard-coded namespace tables are used)."""
    pages = [
        (1, "Berlin", "'''Berlin''' is a large city in Europe. It is far from [[Paris]] and "
                      "[[Rome]].\n\n[[Category:Cities]]"),
        (2, "Paris", "'''Paris''' is a large city in Europe. It lies on the river [[Seine]]. "
                     "It is far from [[Berlin]].\n\nMany people visit [[Berlin]] and [[Paris]] "
                     "every year."),
        (3, "Rome", "'''Rome''' is an old city. It is far from [[Paris]]."),
    ]
    xml = [f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="{lang}">']
    for page_id, title, text in pages:
        xml.append(f"  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>{page_id}</id>\n"
                   f"    <revision>\n      <id>{page_id + 100}</id>\n"
                   f'      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>')
    xml.append("</mediawiki>\n")
    path.write_text("\n".join(xml), encoding="utf-8")
    return path


def wikidata_json(tmp: Path, *parts: Path) -> Path:
    """One JSON dump of the entities of several sample dumps."""
    lines = []
    for part in parts:
        lines += [line.rstrip(",") for line in part.read_text(encoding="utf-8").splitlines()
                  if line.startswith("{")]
    path = tmp / "latest-all.json"
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run25(tmp_path_factory):
    """The 24 languages and Bulgarian (as UTF-16), through the dataset stage, with Wikidata's
    JSON dump including a disambiguation item (Q4167410)."""
    from pretrain.standin import build_standin_tokenizer, dump_texts

    root = tmp_path_factory.mktemp("run25")
    dumps = {lang: SAMPLE / "dumps" / f"{lang}wiki-sample.xml" for lang in LANGUAGES}
    for lang in OTHER:
        dumps[lang] = generated_dump(root / f"{lang}wiki-sample.xml", lang)
    dumps["bg"] = utf16(BG, root)
    assert len(dumps) == 25
    tokenizer = build_standin_tokenizer(root / "tokenizer", dump_texts(dumps.values()), vocab_size=1200)
    wikidata = wikidata_json(root, SAMPLE / "wikidata-sample.json", SAMPLE / "more" / "wikidata-more.json")
    cfg = PreprocessConfig(out_dir=str(root / "out"), dumps={k: str(v) for k, v in dumps.items()},
                           wikidata=str(wikidata), tokenizer=str(tokenizer), num_workers=1, progress=False)
    cfg.entity_vocab.min_num_languages = 1
    cfg.dataset.max_seq_length = 64
    stats = run_pipeline(cfg)
    return root, cfg, stats


def _vocab(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "entity_vocab.jsonl").read_text(encoding="utf-8").splitlines()]


def test_25_languages_end_to_end(run25):
    root, cfg, stats = run25
    out = Path(cfg.out_dir)
    assert sorted(stats) == sorted([*LANGUAGES, "bg"])
    for lang, s in stats.items():
        assert s["pages"] > 0 and s["examples"] > 0 and s["entities"] > 0, lang
        ds = datasets.load_from_disk(str(out / "dataset" / lang))
        assert len(ds) == s["examples"] and set(ds["language"]) == {lang}
    assert json.loads((out / "dataset" / "metadata.json").read_text())["languages"] == list(cfg.dumps)
    vocab = _vocab(out)
    ids = {(title, lang): item["id"] for item in vocab for title, lang in item["entities"]}
    # Bulgarian titles share the ids of the other languages' titles of their Wikidata item.
    assert ids[("Берлин", "bg")] == ids[("Berlin", "en")] == ids[("ベルリン", "ja")]
    assert ids[("Париж", "bg")] == ids[("Paris", "fr")]
    # The generated dumps' "Paris" pages: no sitelink of the sample names them (Q90's itwiki
    # title is "Parigi", it has no eswiki one), so each is an entity of its own language.
    assert ids[("Paris", "es")] != ids[("Paris", "it")] != ids[("Paris", "en")] == ids[("Paris", "fr")]


def test_disambiguation_signals_in_stats(run25):
    root, cfg, stats = run25
    # bg: one page by __DISAMBIG__ (left out by the extract stage), one only by Wikidata's
    # Q4167410 (its text stays; it is never an entity).
    assert stats["bg"]["disambiguation"] == 2
    assert stats["bg"]["disambiguation_signals"] == {"template": 0, "magic_word": 1, "category": 0,
                                                     "wikidata": 1}
    # en's "Paris (disambiguation)" has the same item, but its template found it first.
    assert stats["en"]["disambiguation"] == 1
    assert stats["en"]["disambiguation_signals"] == {"template": 1, "magic_word": 0, "category": 0,
                                                     "wikidata": 0}
    titles = {(t, lang) for item in _vocab(Path(cfg.out_dir)) for t, lang in item["entities"]}
    assert ("Париж", "bg") in titles and ("Париж (пояснение)", "bg") not in titles


def _rebuild_vocab(run25, name: str, wikidata: Path) -> Path:
    """The same pages; interwiki and entity_vocab again from another Wikidata input."""
    root, cfg, _ = run25
    out = root / name
    shutil.copytree(Path(cfg.out_dir) / "pages", out / "pages")
    other = PreprocessConfig(out_dir=str(out), dumps=cfg.dumps, wikidata=str(wikidata),
                             stages=["interwiki", "entity_vocab"], num_workers=1, progress=False)
    other.entity_vocab.min_num_languages = 1
    run_pipeline(other)
    return out


def test_sql_sitelinks_give_the_json_entity_vocabulary(run25):
    root, cfg, _ = run25
    json_out = _rebuild_vocab(run25, "json", SAMPLE / "wikidata-sample.json")
    sql_out = _rebuild_vocab(run25, "sql", SAMPLE / "wikidata-sample.sql")
    assert (sql_out / "entity_vocab.jsonl").read_bytes() == (json_out / "entity_vocab.jsonl").read_bytes()
    assert (sql_out / "entity_vocab.json").read_bytes() == (json_out / "entity_vocab.json").read_bytes()
    for lang in cfg.dumps:
        assert (sql_out / "interwiki" / f"{lang}.tsv").read_bytes() == (
            json_out / "interwiki" / f"{lang}.tsv").read_bytes(), lang
    # Only the JSON dump has the Q4167410 signal: from the table, bg's page that only Wikidata
    # marks is an entity; everything else is as in the run with it.
    with_signal = [sorted(map(tuple, e["entities"])) for e in _vocab(Path(cfg.out_dir))]
    without = [sorted(map(tuple, e["entities"])) for e in _vocab(sql_out)]
    assert [("Париж (пояснение)", "bg")] in without
    assert sorted(e for e in without if e != [("Париж (пояснение)", "bg")]) == sorted(with_signal)
    sql_stats = json.loads((sql_out / "stats.json").read_text())
    assert "wikidata" not in sql_stats["bg"]["disambiguation_signals"]
