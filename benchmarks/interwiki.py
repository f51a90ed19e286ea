"""Throughput of the interwiki stage on Wikidata's two inputs, on the same items.

    python benchmarks/interwiki.py [--copies 3000] [--other-sites 0] [--filler 0] [--repeat 3]
                                   [--compress gz|bz2|none] [--smoke]

Builds, from the bundled sample's items (sample/wikidata-sample.json and the disambiguation
item of sample/more/wikidata-more.json), a JSON dump and the equivalent sitelinks SQL table
(`wb_items_per_site`, mysqldump layout with ~1 MB INSERT lines), each holding `--copies` copies
of every item under new ids and titles (so that compression sees distinct text, as in the real
files), compressed as Wikimedia ships them (gzip). Most of the sample's sitelinks are to the
25 Wikipedias; `--other-sites N` gives every copied item N more, to other wikis (in the real
table about half of the rows are), which the parser skips; `--filler K` adds K items without
any sitelink per item (most of Wikidata: whole lines of the JSON dump, no row in the table),
copies of the sample's scholarly article. Then runs `build_interwiki` on both for the
25 languages of the full recipe (the 24 and bg), checks that the `<lang>.tsv` outputs are
identical, and prints per input: seconds (wall and CPU, the reader thread included), JSON
lines/s, SQL rows/s, items/s and MB/s of decompressed input; then the SQL path's speedup on
the same items.
Medians of `--repeat` runs. Ends with one line of name=value figures.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from preprocessing.config import LANGUAGES  # noqa: E402
from preprocessing.interwiki import SITELINKS_TABLE, build_interwiki, sitelinks_file, sql_quote  # noqa: E402

SAMPLES = (REPO / "sample" / "wikidata-sample.json", REPO / "sample" / "more" / "wikidata-more.json")
LANGS = [*LANGUAGES, "bg"]
ROWS_PER_LINE = 20_000  # ~1 MB lines, as mysqldump writes them
OTHER_SITES = ("ukwiki cawiki cswiki huwiki nowiki rowiki srwiki fawiki hewiki dawiki euwiki "
               "commonswiki enwikiquote frwiktionary dewikivoyage ruwikisource").split()
ID_STEP = 100_000_000  # copy k of item Qn is Q(n + k * ID_STEP)


def sample_items() -> list[dict]:
    items = []
    for path in SAMPLES:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip().rstrip(",")
            if line.startswith("{"):
                items.append(json.loads(line))
    return items


def copies(items: list[dict], n: int, other_sites: int = 0, filler: int = 0):
    """Copy k of every item: a new id, " k" after every title, and `other_sites` more sitelinks
    to wikis outside the 25; after each item with sitelinks, `filler` items without."""
    blank = next(item for item in items if item["id"].startswith("Q") and not item.get("sitelinks"))
    serial = 0
    for k in range(n):
        for item in items:
            if filler and item.get("sitelinks"):
                for _ in range(filler):
                    serial += 1
                    yield dict(blank, id=f"Q{int(blank['id'][1:]) + serial * ID_STEP}")
            if not item["id"].startswith("Q") or not isinstance(item.get("sitelinks"), dict):
                yield item
                continue
            copy = dict(item, id=f"Q{int(item['id'][1:]) + k * ID_STEP}")
            links = {site: dict(link, title=f"{link['title']} {k}") for site, link in item["sitelinks"].items()}
            title = next(iter(links.values()))["title"]
            for site in OTHER_SITES[:other_sites]:
                links.setdefault(site, {"site": site, "title": title, "badges": []})
            copy["sitelinks"] = links
            yield copy


class _Counted:
    """A binary file that counts the (uncompressed) bytes written to it."""

    def __init__(self, f):
        self.f, self.size = f, 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.f.write(data)


def write_inputs(tmp: Path, n: int, compress: str, other_sites: int = 0,
                 filler: int = 0) -> tuple[Path, Path, int, dict[str, int]]:
    """The JSON dump and the SQL table of the same items; returns their paths, the rows, and
    the decompressed sizes."""
    items = sample_items()
    suffix = {"gz": ".gz", "bz2": ".bz2", "none": ""}[compress]
    opener = {"gz": lambda p: gzip.open(p, "wb", compresslevel=6), "bz2": lambda p: bz2.open(p, "wb"),
              "none": lambda p: open(p, "wb")}[compress]
    json_path, sql_path = tmp / f"latest-all.json{suffix}", tmp / f"wb_items_per_site.sql{suffix}"
    sizes = {}
    with opener(json_path) as raw:
        f = _Counted(raw)
        f.write(b"[\n")
        first = True
        for item in copies(items, n, other_sites, filler):
            f.write(b"" if first else b",\n")
            f.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            first = False
        f.write(b"\n]\n")
    sizes["json"] = f.size
    rows = 0
    with opener(sql_path) as raw:
        f = _Counted(raw)
        f.write(f"-- MySQL dump 10.19\n--\n-- Host: localhost    Database: wikidatawiki\n\n"
                f"DROP TABLE IF EXISTS `{SITELINKS_TABLE}`;\nCREATE TABLE `{SITELINKS_TABLE}` (\n"
                "  `ips_row_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n"
                "  `ips_item_id` int(10) unsigned NOT NULL,\n  `ips_site_id` varbinary(32) NOT NULL,\n"
                "  `ips_site_page` varbinary(310) NOT NULL,\n  PRIMARY KEY (`ips_row_id`)\n"
                f") ENGINE=InnoDB DEFAULT CHARSET=binary;\nLOCK TABLES `{SITELINKS_TABLE}` WRITE;\n"
                .encode())
        line: list[bytes] = []
        for item in copies(items, n, other_sites, filler):
            if not item["id"].startswith("Q") or not isinstance(item.get("sitelinks"), dict):
                continue
            for site, link in item["sitelinks"].items():
                rows += 1
                line.append(b"(%d,%s,%s,%s)" % (rows, item["id"][1:].encode(), sql_quote(site),
                                                sql_quote(link["title"])))
                if len(line) == ROWS_PER_LINE:
                    f.write(b"INSERT INTO `%s` VALUES %s;\n" % (SITELINKS_TABLE.encode(), b",".join(line)))
                    line = []
        if line:
            f.write(b"INSERT INTO `%s` VALUES %s;\n" % (SITELINKS_TABLE.encode(), b",".join(line)))
        f.write(b"UNLOCK TABLES;\n\n-- Dump completed on 2024-05-01 12:00:00\n")
    sizes["sql"] = f.size
    return json_path, sql_path, rows, sizes


def measure(path: Path, out: Path, repeat: int) -> tuple[float, float, dict]:
    """Median wall and CPU seconds of build_interwiki on path (CPU: all threads of the process)."""
    walls, cpus, stats = [], [], {}
    for _ in range(repeat):
        out.mkdir(parents=True, exist_ok=True)
        wall, cpu = time.perf_counter(), time.process_time()
        stats = build_interwiki(path, LANGS, out, progress=False)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3000, help="copies of the sample's items")
    ap.add_argument("--other-sites", type=int, default=0, choices=range(len(OTHER_SITES) + 1),
                    metavar=f"0..{len(OTHER_SITES)}", help="more sitelinks per item, to other wikis")
    ap.add_argument("--filler", type=int, default=0, help="items without sitelinks per item")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compress", choices=("gz", "bz2", "none"), default="gz")
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    args = ap.parse_args()
    if args.smoke:
        args.copies, args.repeat = 20, 1
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        json_path, sql_path, rows, sizes = write_inputs(tmp, args.copies, args.compress, args.other_sites,
                                                        args.filler)
        json_wall, json_cpu, json_stats = measure(json_path, tmp / "json", args.repeat)
        sql_wall, sql_cpu, sql_stats = measure(sql_path, tmp / "sql", args.repeat)
        for lang in LANGS:
            a, b = sitelinks_file(tmp / "json", lang), sitelinks_file(tmp / "sql", lang)
            if a.read_bytes() != b.read_bytes():
                sys.exit(f"error: {lang}.tsv differs between the JSON and the SQL input")
        packed = {"json": json_path.stat().st_size, "sql": sql_path.stat().st_size}
    items, lines = json_stats["items"], json_stats["lines"]
    assert sql_stats["rows"] == rows and sql_stats["sitelinks"] == json_stats["sitelinks"]
    print(f"{args.copies} copies of the sample's items (+{args.other_sites} other sites each, "
          f"{args.filler} items without sitelinks per item): {items:,} items with a sitelink to the "
          f"{len(LANGS)} Wikipedias, {sum(json_stats['sitelinks'].values()):,} such sitelinks; "
          f"JSON {lines:,} entity lines ({sizes['json'] / 1e6:.1f} MB, {packed['json'] / 1e6:.1f} "
          f"MB {args.compress}), SQL {rows:,} rows ({sizes['sql'] / 1e6:.1f} MB, "
          f"{packed['sql'] / 1e6:.1f} MB {args.compress}); load {load:.2f}; "
          f"median of {args.repeat}")
    print(f"{'input':<6}{'wall s':>9}{'CPU s':>9}{'lines/s':>11}{'rows/s':>11}{'items/s':>11}{'MB/s':>8}")
    for name, wall, cpu, per_s in (("json", json_wall, json_cpu, f"{lines / json_wall:>11,.0f}{'':>11}"),
                                   ("sql", sql_wall, sql_cpu, f"{'':>11}{rows / sql_wall:>11,.0f}")):
        print(f"{name:<6}{wall:>9.3f}{cpu:>9.3f}{per_s}{items / wall:>11,.0f}{sizes[name] / 1e6 / wall:>8.1f}")
    print("outputs: identical <lang>.tsv from both inputs")
    print(f"json_lines_per_s={lines / json_wall:.0f} sql_rows_per_s={rows / sql_wall:.0f} "
          f"json_items_per_s={items / json_wall:.0f} sql_items_per_s={items / sql_wall:.0f} "
          f"sql_speedup={json_wall / sql_wall:.2f} sql_cpu_speedup={json_cpu / sql_cpu:.2f} "
          f"sql_mb_per_s={sizes['sql'] / 1e6 / sql_wall:.1f} sql_rows={rows} identical=1")


if __name__ == "__main__":
    main()
