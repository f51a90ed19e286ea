"""Wikidata sitelinks from the `wb_items_per_site` SQL table: the same output as the JSON dump,
MySQL's quoting and escapes, recognition by content, bad input, and the JSON dump's
disambiguation items (Q4167410)."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from preprocessing.config import PreprocessConfig
from preprocessing.interwiki import (
    WikidataError,
    build_interwiki,
    input_format,
    load_disambiguation,
    load_interwiki,
    sql_quote,
)
from preprocessing.pipeline import PreprocessError, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample"
SQL = SAMPLE / "wikidata-sample.sql"
JSON = SAMPLE / "wikidata-sample.json"
# The sample's languages, Bulgarian, and sites the sample has only some (or no) sitelinks to.
LANGS = ["en", "ja", "th", "ar", "hi", "de", "fr", "zh", "bg", "es", "it", "ru", "zh-yue", "simple", "gd", "sw"]
HEADER = (b"-- MySQL dump 10.19  Distrib 10.3.39-MariaDB\n--\n-- Host: db    Database: wikidatawiki\n\n"
          b"DROP TABLE IF EXISTS `wb_items_per_site`;\n/*!40101 SET character_set_client = utf8 */;\n"
          b"CREATE TABLE `wb_items_per_site` (\n  `ips_row_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n"
          b"  `ips_item_id` int(10) unsigned NOT NULL,\n  `ips_site_id` varbinary(32) NOT NULL,\n"
          b"  `ips_site_page` varbinary(310) NOT NULL,\n  PRIMARY KEY (`ips_row_id`)\n"
          b") ENGINE=InnoDB DEFAULT CHARSET=binary;\n\nLOCK TABLES `wb_items_per_site` WRITE;\n"
          b"/*!40000 ALTER TABLE `wb_items_per_site` DISABLE KEYS */;\n")
TRAILER = (b"/*!40000 ALTER TABLE `wb_items_per_site` ENABLE KEYS */;\nUNLOCK TABLES;\n\n"
           b"-- Dump completed on 2024-05-01 12:00:00\n")


def sql_dump(rows: list[tuple[int, str, str]], per_line: int = 3) -> bytes:
    """A sitelinks table dump of (item number, site, title) rows."""
    values = [b"(%d,%d,%s,%s)" % (i, item, sql_quote(site), sql_quote(title))
              for i, (item, site, title) in enumerate(rows, 1)]
    lines = [b"INSERT INTO `wb_items_per_site` VALUES " + b",".join(values[i:i + per_line]) + b";\n"
             for i in range(0, len(values), per_line)]
    return HEADER + b"".join(lines) + TRAILER


def json_dump(rows: list[tuple[int, str, str]]) -> bytes:
    """The JSON dump of the same sitelinks (one entity per item, in first-row order)."""
    items: dict[int, dict] = {}
    for item, site, title in rows:
        items.setdefault(item, {})[site] = {"site": site, "title": title, "badges": []}
    lines = [json.dumps({"type": "item", "id": f"Q{item}", "claims": {}, "sitelinks": links},
                        ensure_ascii=False) for item, links in items.items()]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode("utf-8")


def tsvs(out: Path, langs=LANGS) -> dict[str, bytes]:
    return {lang: (out / f"{lang}.tsv").read_bytes() for lang in langs}


def build(path: Path, out: Path, langs=LANGS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return build_interwiki(path, langs, out, progress=False)


@pytest.mark.parametrize("compress", ["plain", "gz", "bz2"])
def test_sample_table_gives_the_json_dump_output(tmp_path, compress):
    raw_sql, raw_json = SQL.read_bytes(), JSON.read_bytes()
    pack = {"plain": lambda b: b, "gz": gzip.compress, "bz2": bz2.compress}[compress]
    # Named against their content: the format is read from the data.
    sql, js = tmp_path / "wikidata.json.gz", tmp_path / "wikidata.sql"
    sql.write_bytes(pack(raw_sql))
    js.write_bytes(pack(raw_json))
    assert (input_format(sql), input_format(js)) == ("sql", "json")
    sql_stats, json_stats = build(sql, tmp_path / "sql"), build(js, tmp_path / "json")
    assert tsvs(tmp_path / "sql") == tsvs(tmp_path / "json")
    assert sql_stats["sitelinks"] == json_stats["sitelinks"] == {
        "en": 10, "ja": 10, "th": 10, "ar": 10, "hi": 10, "de": 10, "fr": 10, "zh": 3, "bg": 10,
        "es": 2, "it": 1, "ru": 1, "zh-yue": 3, "simple": 3, "gd": 1, "sw": 0}
    assert (sql_stats["format"], sql_stats["rows"], sql_stats["bad_titles"], sql_stats["complete"]) == (
        "sql", 109, 0, True)
    assert json.loads((tmp_path / "sql" / "stats.json").read_text()) == sql_stats
    assert load_interwiki(tmp_path / "sql", ["bg", "gd"]) == {
        **{("bg", t): q for t, q in [("Берлин", "Q64"), ("Германия", "Q183"), ("Токио", "Q1490"),
                                    ("Япония", "Q17"), ("Париж", "Q90"), ("Франция", "Q142"),
                                    ("Лондон", "Q84"), ("Обединено кралство", "Q145"),
                                    ("Европа", "Q46"), ("Столица", "Q5119")]},
        ("gd", "A' Ghearmailt"): "Q183"}  # 'A\' Ghearmailt' in the table
    # Only the JSON dump has statements, so only it lists disambiguation items.
    assert load_disambiguation(tmp_path / "sql", "en") is None
    assert load_disambiguation(tmp_path / "json", "en") == set()


TRICKY = [  # (item, site, title): MySQL escapes, quotes, commas and parentheses in titles
    (1, "enwiki", "Rock 'n' roll"),
    (1, "dewiki", 'Der "Rock" (Musik), 1950er'),
    (2, "enwiki", "C:\\Windows\\"),  # a backslash before the closing quote
    (2, "frwiki", "A),(3,4,'enwiki','Fake')"),  # a row inside a title
    (3, "enwiki", "100% _pure_ (album)"),  # \% and \_ are not MySQL escapes outside LIKE
    (3, "bgwiki", "Ами' ,'("),
    (4, "enwiki_unknown", "Other site"),
    (4, "enwiki", "Café;"),
    (5, "zh_yuewiki", "香港"),
    (5, "zhwiki", "香港 (城市)"),
    (6, "enwiki", "Ends with a quote'"),
]


def test_quotes_escapes_commas_and_parentheses(tmp_path):
    langs = ["en", "de", "fr", "bg", "zh", "zh-yue"]
    (tmp_path / "t.sql").write_bytes(sql_dump(TRICKY))
    (tmp_path / "t.json").write_bytes(json_dump(TRICKY))
    stats = build(tmp_path / "t.sql", tmp_path / "sql", langs)
    build(tmp_path / "t.json", tmp_path / "json", langs)
    assert tsvs(tmp_path / "sql", langs) == tsvs(tmp_path / "json", langs)
    assert (tmp_path / "sql" / "en.tsv").read_text(encoding="utf-8").splitlines() == [
        "Rock 'n' roll\tQ1", "C:\\Windows\\\tQ2", "100% pure (album)\tQ3", "Café;\tQ4",
        "Ends with a quote'\tQ6"]
    assert (tmp_path / "sql" / "fr.tsv").read_text(encoding="utf-8") == "A),(3,4,'enwiki','Fake')\tQ2\n"
    assert (tmp_path / "sql" / "zh-yue.tsv").read_text(encoding="utf-8") == "香港\tQ5\n"
    assert stats["rows"] == len(TRICKY) and stats["sitelinks"]["en"] == 5


def test_control_character_escapes_and_bad_titles(tmp_path):
    body = (b"(1,1,'enwiki','Tab\\there'),(2,2,'enwiki','Line\\nfeed'),(3,3,'enwiki','\xff\xfe'),"
            b"(4,4,'enwiki','Ok\\Z\\0\\b'),(5,5,'enwiki','\\\"Quoted\\\"'),(6,6,'enwiki','\\%x\\_y'),"
            b"(7,7,'enwiki','" + "Ünïcödé".encode() + b"');\n")
    (tmp_path / "c.sql").write_bytes(HEADER + b"INSERT INTO `wb_items_per_site` VALUES " + body + TRAILER)
    stats = build(tmp_path / "c.sql", tmp_path / "out", ["en"])
    assert stats["bad_titles"] == 1 and stats["rows"] == 7  # row 3 is not UTF-8
    # \t and \n become whitespace that title normalization makes a space, as from the JSON dump.
    assert (tmp_path / "out" / "en.tsv").read_text(encoding="utf-8").splitlines() == [
        "Tab here\tQ1", "Line feed\tQ2", "Ok\x1a\x00\x08\tQ4", '"Quoted"\tQ5', "\\%x\\ y\tQ6",
        "Ünïcödé\tQ7"]


def test_statement_split_over_lines_and_crlf(tmp_path):
    one = sql_dump(TRICKY, per_line=100)
    split = one.replace(b"VALUES (", b"VALUES\n(").replace(b"),(7,", b"),\n(7,").replace(b"),(9,", b"),\n(9,")
    assert split.count(b"\n(") >= 2
    (tmp_path / "a.sql").write_bytes(one)
    (tmp_path / "b.sql").write_bytes(split)
    (tmp_path / "c.sql").write_bytes(one.replace(b"\n", b"\r\n"))
    for name in "abc":
        build(tmp_path / f"{name}.sql", tmp_path / name, ["en", "fr"])
    assert tsvs(tmp_path / "a", ["en", "fr"]) == tsvs(tmp_path / "b", ["en", "fr"]) == tsvs(tmp_path / "c", ["en", "fr"])


# ------------------------------------------------------------------------------ bad input
def _error(tmp_path, data: bytes, name: str = "wb.sql") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(WikidataError) as err:
        build(path, tmp_path / "out", ["en"])
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_dump_of_another_table(tmp_path):
    page_props = SQL.read_bytes().replace(b"wb_items_per_site", b"page_props")
    assert "line 22: a SQL dump of table `page_props`, not `wb_items_per_site`" in _error(tmp_path, page_props)
    # Data only (no CREATE TABLE): the INSERT names the table.
    inserts = b"INSERT INTO `page_props` VALUES (1,'wikibase_item','Q84',NULL);\n"
    assert "line 1: a SQL dump of table `page_props`" in _error(tmp_path, inserts)


def test_cut_and_damaged_files(tmp_path):
    data = SQL.read_bytes()
    first, second = data.index(b"INSERT"), data.index(b"INSERT", data.index(b"INSERT") + 1)
    lineno = data[:first].count(b"\n") + 1
    # Cut at a line end: no line after the data says it is complete.
    message = _error(tmp_path, data[:second])
    assert f"ends after line {lineno}, before the end of the `wb_items_per_site` data" in message
    # Cut inside a line.
    message = _error(tmp_path, data[:first + 300])
    assert f"line {lineno}: a line of `wb_items_per_site` rows that does not parse" in message
    # Garbage inside a row, a line that is no SQL.
    row = data.index(b"'hiwiki'", first)
    broken = data[:row] + data[row + 1:]  # hiwiki' without its opening quote
    message = _error(tmp_path, broken)
    assert f"line {lineno}: a line of `wb_items_per_site` rows that does not parse (at b\"(" in message
    rows_before = data.count(b"),(", first, row)
    assert ",hiwiki'," in message and f"after {rows_before} complete rows)" in message
    junk = data[:first] + b"hello world\n" + data[first:]
    assert f"line {lineno}: not a line of a mysqldump file (b'hello world')" in _error(tmp_path, junk)
    assert "no `wb_items_per_site` table in this SQL dump" in _error(tmp_path, b"-- MySQL dump\n-- Dump completed\n")
    # A compressed file cut short.
    packed = gzip.compress(data * 40)
    assert "truncated or corrupt compressed data after line" in _error(
        tmp_path, packed[: len(packed) // 2], "wb.sql.gz")
    assert "neither the Wikidata JSON dump" in _error(tmp_path, b"PK\x03\x04 zip file\n")


def test_pipeline_reports_bad_sql_in_one_line_and_writes_nothing(tmp_path, fixture_dumps):
    bad = tmp_path / "wikidatawiki-20240501-wb_items_per_site.sql.gz"
    data = SQL.read_bytes()
    bad.write_bytes(gzip.compress(data[: data.index(b"INSERT") + 500] + b"\n"))
    out = tmp_path / "out"
    cfg = PreprocessConfig(out_dir=str(out), dumps={"en": str(fixture_dumps["en"])}, wikidata=str(bad),
                           stages=["extract", "interwiki"], num_workers=1, progress=False)
    with pytest.raises(PreprocessError) as err:
        run_pipeline(cfg)
    assert "\n" not in str(err.value) and str(bad) in str(err.value) and "does not parse" in str(err.value)
    assert (out / "pages" / "en" / "pages.jsonl").exists()  # the finished stage is kept
    assert not (out / "interwiki").exists() and not list(out.glob(".tmp-*"))

    # Neither format: found before any work.
    other = tmp_path / "notes.txt"
    other.write_text("just some text\n")
    cfg.out_dir, cfg.wikidata = str(tmp_path / "out2"), str(other)
    with pytest.raises(PreprocessError, match="line 1: neither the Wikidata JSON dump"):
        run_pipeline(cfg)
    assert not (tmp_path / "out2" / "pages").exists()


def test_cli_accepts_the_sql_table(tmp_path, fixture_dumps):
    import os

    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    dumps = "{" + ", ".join(f"{k}: '{v}'" for k, v in fixture_dumps.items()) + "}"
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "preprocess.py"), f"out_dir={out}", f"dumps={dumps}",
         f"wikidata={SQL}", "stages=[extract,interwiki,entity_vocab]", "num_workers=1",
         "entity_vocab.min_num_languages=2", "progress=false"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((out / "interwiki" / "stats.json").read_text())
    assert stats["format"] == "sql" and stats["complete"] and stats["rows"] == 109
    vocab = [json.loads(line) for line in (out / "entity_vocab.jsonl").read_text(encoding="utf-8").splitlines()]
    berlin = next(e for e in vocab if e.get("qid") == "Q64")
    assert {lang for _, lang in berlin["entities"]} == set(fixture_dumps)


# ------------------------------------------------------------------------------ Q4167410
def _entity(qid: str, p31: list[tuple[str, str]], sitelinks: dict[str, str], extra_claims=None) -> str:
    claims = {"P31": [{"mainsnak": {"snaktype": "value", "property": "P31", "datavalue": {
        "value": {"entity-type": "item", "id": value}, "type": "wikibase-entityid"}},
        "type": "statement", "rank": rank} for value, rank in p31]}
    claims.update(extra_claims or {})
    links = {site: {"site": site, "title": title, "badges": []} for site, title in sitelinks.items()}
    return json.dumps({"type": "item", "id": qid, "claims": claims, "sitelinks": links}, ensure_ascii=False)


def test_disambiguation_items_from_the_json_dump(tmp_path):
    lines = [
        _entity("Q10", [("Q4167410", "normal")], {"enwiki": "Mercury", "bgwiki": "Меркурий"}),
        # Q4167410 in another property, a deprecated statement, or among several P31 values.
        _entity("Q11", [("Q5", "normal")], {"enwiki": "Disambiguation (film)"}, {"P144": [
            {"mainsnak": {"datavalue": {"value": {"id": "Q4167410"}}}, "rank": "normal"}]}),
        _entity("Q12", [("Q4167410", "deprecated"), ("Q5", "normal")], {"enwiki": "Smith"}),
        _entity("Q13", [("Q22808320", "normal"), ("Q4167410", "normal")], {"enwiki": "mercury_(disambiguation)"}),
        _entity("Q14", [("Q4167410", "normal")], {"dewiki": "Merkur"}),  # no wanted sitelink
    ]
    path = tmp_path / "latest-all.json"
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    stats = build(path, tmp_path / "out", ["en", "bg"])
    assert stats["disambiguation"] == {"en": 2, "bg": 1}
    assert load_disambiguation(tmp_path / "out", "en") == {"Mercury", "Mercury (disambiguation)"}
    assert load_disambiguation(tmp_path / "out", "bg") == {"Меркурий"}
    # Their sitelinks are still written: the vocabulary stage leaves them out.
    assert (tmp_path / "out" / "en.tsv").read_text(encoding="utf-8").splitlines() == [
        "Mercury\tQ10", "Disambiguation (film)\tQ11", "Smith\tQ12", "Mercury (disambiguation)\tQ13"]
