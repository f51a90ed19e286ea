"""The HTML report: exact tables from synthetic inputs, embedded plots, missing inputs as notes,
and a real headless browser rendering the page."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.evaluation.report import ReportError, read_entity_vocab, read_metrics, stage_name, write_report

ROOT = Path(__file__).resolve().parents[1]
# The browser: on PATH as chromium (Debian) or chromium-browser; CI (CI=1) must have one.
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


class Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self._cell = [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def table_with(page: str, first_header: str, *more: str) -> list[list[str]]:
    for table in Tables(page).tables:
        if table and table[0][: 1 + len(more)] == [first_header, *more]:
            return table
    raise AssertionError(f"no table starting with {[first_header, *more]}")


def write_jsonl(path: Path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


# Inputs and the full report are built once per module (plots cost about a second per report).
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "OUT"
    out.mkdir()
    stats = {
        "en": {"pages": 12, "redirects": 3, "disambiguation": 1, "skipped": {"empty": 2, "parse_error": 1},
               "paragraphs": 40, "sentences": 95, "links": 200, "links_in_vocab": 150, "examples": 30,
               "tokens": 3456, "entities": 77, "truncated": False},
        "ja": {"pages": 7, "redirects": 0, "disambiguation": 0, "skipped": {},
               "paragraphs": 20, "sentences": 41, "links": 80, "links_in_vocab": 20, "examples": 9,
               "tokens": 1200, "entities": 15, "truncated": True},
    }
    (out / "stats.json").write_text(json.dumps(stats))
    write_jsonl(out / "entity_vocab.jsonl", [
        {"id": 0, "entities": [["[PAD]", "en"], ["[PAD]", "ja"]], "count": 0},  # the reference's form
        {"id": 1, "entities": [["[UNK]", None]], "count": 0},
        {"id": 2, "entities": [["[MASK]", None]], "count": 0},
        {"id": 3, "entities": [["Berlin", "en"], ["ベルリン", "ja"], ["Berlín", "es"]], "count": 50},
        {"id": 4, "entities": [["Germany", "en"], ["ドイツ", "ja"]], "count": 30},
        {"id": 5, "entities": [["Tokyo", "en"], ["東京都", "ja"]], "count": 20},
        {"id": 6, "entities": [["Spree", "en"]], "count": 5},
        {"id": 7, "entities": [["富士山", "ja"]], "count": 2},
    ])
    return out


def make_run(path: Path, config: str | None, records) -> Path:
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.yaml").write_text(config)
    if records is not None:
        write_jsonl(path / "metrics.jsonl", records)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> list[Path]:
    def records(losses, offset_acc):
        for i, loss in enumerate(losses):
            step = 10 * (i + 1)
            yield {"step": step, "train/loss": loss, "train/loss_mlm": loss / 2, "train/loss_mep": loss / 2,
                   "train/acc_mep": 0.1 * i, "train/lr": 1e-4, "throughput/tokens_per_s": 1000.0 + i,
                   "train/en/loss_mlm": loss + 0.5, "train/ja/loss_mlm": loss - 0.5, "train/en/loss_mep": loss}
            yield {"step": step, "eval/en/acc_mlm": offset_acc + 0.01 * i, "eval/ja/acc_mlm": offset_acc,
                   "eval/en/acc_mep": 0.5, "eval/ja/acc_mep": 0.25 + i / 100, "eval/en/loss_mlm": 2.0,
                   "eval/acc_mlm": offset_acc}

    tmp_path = tmp_path_factory.mktemp("runs")
    stage1 = make_run(tmp_path / "stage1", f"stage:\n  name: entity\ndata:\n  dir: {data_dir}\n",
                      records([8.0, 6.0, 5.0], 0.1))
    stage2 = make_run(tmp_path / "stage2", "stage: full\n", records([4.0, 3.5], 0.3))
    return [stage1, stage2]


@pytest.fixture(scope="module")
def report(tmp_path_factory, runs) -> Path:
    """The report on both stages, the data dir found through stage 1's config.yaml."""
    tmp_path = tmp_path_factory.mktemp("report")
    cloze = tmp_path / "cloze.json"
    cloze.write_text(json.dumps({"word": {"en": 0.5, "ja": 0.25}, "entity": {"en": 1.0}}))
    return write_report(runs, tmp_path / "report", cloze=cloze)


def test_tables_hold_the_exact_numbers(runs, data_dir, report):
    page = report.read_text()
    assert f"Preprocessing output: <code>{data_dir}</code>" in page  # found through data.dir of config.yaml
    assert table_with(page, "lang", "pages") == [
        ["lang", "pages", "redirects", "disambig.", "skipped", "paragraphs", "sentences", "links",
         "links in vocab", "in vocab %", "examples", "tokens", "entities"],
        ["en", "12", "3", "1", "3", "40", "95", "200", "150", "75.0%", "30", "3,456", "77"],
        ["ja", "7", "0", "0", "0", "20", "41", "80", "20", "25.0%", "9", "1,200", "15"],
        ["total", "19", "3", "1", "3", "60", "136", "280", "170", "60.7%", "39", "4,656", "92"],
    ]
    assert "Skipped (pages or examples) by reason: empty 2, parse_error 1" in page
    assert "truncated dump(s), counts cover only what was read: ja" in page
    assert table_with(page, "entities (excl. special)") == [
        ["entities (excl. special)", "total mentions", "in ≥ 2 languages", "max languages"],
        ["5", "107", "3", "3"],
    ]
    assert table_with(page, "languages") == [["languages", "1", "2", "3"], ["entities", "2", "2", "1"]]
    assert table_with(page, "stage", "run directory") == [
        ["stage", "run directory", "last step", "first loss", "last loss", "mean tokens/s"],
        ["entity", str(runs[0]), "30", "8", "5", "1,001"],
        ["full", str(runs[1]), "20", "4", "3.5", "1,000"],
    ]
    assert table_with(page, "lang", "acc_mep (entity)") == [
        ["lang", "acc_mep (entity)", "acc_mlm (entity)", "acc_mep (full)", "acc_mlm (full)"],
        ["en", "0.500", "0.120", "0.500", "0.310"],
        ["ja", "0.270", "0.100", "0.260", "0.300"],
    ]
    assert table_with(page, "lang", "word prompts") == [
        ["lang", "word prompts", "entity prompts"],
        ["en", "0.500", "1.000"], ["ja", "0.250", "–"], ["mean", "0.375", "1.000"],
    ]


def test_cloze_table_shows_counts_and_skips(tmp_path):
    cloze = tmp_path / "cloze.json"  # the full form that launch/evaluate.py writes
    cloze.write_text(json.dumps({
        "word": {"en": 0.5}, "entity": {"en": 0.25},
        "counts": {"word": {"en": {"correct": 2, "total": 4}}, "entity": {"en": {"correct": 1, "total": 4}}},
        "skipped": {"en": {"no_label": 3, "no_entity": 1}}}))
    page = write_report([], tmp_path / "report", cloze=cloze).read_text()
    assert table_with(page, "lang", "word prompts") == [
        ["lang", "word prompts", "entity prompts", "skipped"],
        ["en", "0.500 (2/4)", "0.250 (1/4)", "no_label=3, no_entity=1"], ["mean", "0.500", "0.250", ""],
    ]


def test_plots_are_embedded_and_written_beside_the_page(report):
    out, page = report.parent, report.read_text()
    embedded = dict(re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page))
    names = {name: data for data, name in embedded.items()}
    assert sorted(names) == ["accuracy", "cloze", "data_per_language", "entity_vocab", "eval_accuracy_per_language",
                             "eval_per_language", "losses", "other_metrics", "throughput", "train_per_language"]
    assert re.findall(r"<h3>([^<]+)</h3>", page) == [
        "Per-language statistics", "Entity vocabulary", "Losses", "Accuracy", "Other training metrics",
        "Validation accuracy per language", "Training metrics per language", "Validation metrics per language",
        "Throughput"]
    assert re.findall(r"<h2>([^<]+)</h2>", page) == ["Data", "Training", "Cloze evaluation"]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names)
    for name, data in names.items():
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert base64.b64decode(data) == png  # the embedded image is the file beside the page
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page  # self-contained


def test_missing_inputs_become_notes(tmp_path):
    bare = make_run(tmp_path / "bare", None, None)
    partial = make_run(tmp_path / "partial", "stage: {name: full}\n", None)
    (partial / "metrics.jsonl").write_text('{"step": 5, "train/loss": 2.0}\n{"step": 6, "train/lo\n')
    page = write_report([bare, partial], tmp_path / "report").read_text()
    assert "no preprocessing output given" in page
    assert f"{bare / 'metrics.jsonl'} not found: no training curves for this run" in page
    assert f"{partial / 'metrics.jsonl'}: skipped 1 unreadable line(s) (line 2)" in page
    assert "no eval/&lt;lang&gt;/acc_... metrics in metrics.jsonl" in page
    assert "no throughput/... metrics in metrics.jsonl" in page
    assert table_with(page, "stage", "run directory")[1:] == [
        ["bare", str(bare), "–", "–", "–", "–"],
        ["full", str(partial), "5", "2", "2", "–"],
    ]
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["losses.png"]

    empty_data = tmp_path / "empty"
    empty_data.mkdir()
    page = write_report([], tmp_path / "report2", data_dir=empty_data).read_text()
    assert f"{empty_data / 'stats.json'} not found" in page
    assert f"{empty_data / 'entity_vocab.jsonl'} not found" in page
    assert "no run directory given" in page


def test_bad_inputs_are_one_line_errors(tmp_path, data_dir):
    with pytest.raises(ReportError, match="run directory not found: .*nope"):
        write_report([tmp_path / "nope"], tmp_path / "r")
    with pytest.raises(ReportError, match="data directory not found"):
        write_report([], tmp_path / "r", data_dir=tmp_path / "nope")
    broken = make_run(tmp_path / "broken", "stage: [entity\n", None)
    with pytest.raises(ReportError, match=r"broken/config.yaml: not valid YAML"):
        write_report([broken], tmp_path / "r")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "entity_vocab.jsonl").write_text('{"id": 0, "entities": [["[PAD]", null]], "count": 0}\n{"id": 1}\n')
    with pytest.raises(ReportError, match=r"entity_vocab.jsonl:2: not an entity vocabulary line"):
        write_report([], tmp_path / "r", data_dir=bad)
    (bad / "stats.json").write_text('{"en": {"pages": "12"}}')
    with pytest.raises(ReportError, match=r"stats.json: en.pages is not a number: '12'"):
        write_report([], tmp_path / "r", data_dir=bad)


def test_metrics_and_stage_names(tmp_path, data_dir):
    path = tmp_path / "metrics.jsonl"
    # steps 20 and 30 are repeated after a resume from step 10: the later records win
    write_jsonl(path, [{"step": 10, "train/loss": 3.0}, {"step": 20, "train/loss": 2.9},
                       {"step": 30, "train/loss": 2.8, "note": "x", "train/ok": True},
                       {"step": 20, "train/loss": 2.5}, {"step": 30, "train/loss": float("nan")},
                       {"train/loss": 1.0}])
    series, notes = read_metrics(path)
    assert list(series) == ["train/loss"]
    assert series["train/loss"][:2] == [(10, 3.0), (20, 2.5)]
    assert series["train/loss"][2][0] == 30 and np.isnan(series["train/loss"][2][1])
    assert notes == [f"{path}: skipped 1 unreadable line(s) (line 6)"]

    assert stage_name(tmp_path / "run1", {"stage": {"name": "entity"}}) == "entity"
    assert stage_name(tmp_path / "run1", {"stage": "full"}) == "full"
    assert stage_name(tmp_path / "run1", {}) == "run1"

    vocab = read_entity_vocab(data_dir / "entity_vocab.jsonl")
    assert vocab.counts == [50, 30, 20, 5, 2]
    assert dict(vocab.num_languages) == {3: 1, 2: 2, 1: 2}


def load_cli():
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "launch" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(tmp_path, capsys):
    cli = load_cli()
    run = make_run(tmp_path / "run", None, None)
    assert cli.main([f"runs={run}"]) == 0
    assert (run / "report" / "report.html").is_file()  # default: FIRST_RUN_DIR/report
    assert capsys.readouterr().out == f"report: {run / 'report' / 'report.html'} (PNGs beside it)\n"
    data = tmp_path / "OUT"
    data.mkdir()
    assert cli.main([f"data={data}"]) == 0
    assert (data / "report" / "report.html").is_file()  # default without a run: OUT/report
    assert cli.main([f"runs={tmp_path / 'missing'}", f"out={tmp_path / 'r'}"]) == 1
    assert capsys.readouterr().err == f"error: run directory not found: {tmp_path / 'missing'}\n"
    with pytest.raises(SystemExit):
        cli.main([])
    # the script itself, as users run it
    done = subprocess.run([sys.executable, str(ROOT / "launch" / "report.py"), f"runs={run}", f"data={data}",
                           f"out={tmp_path / 'r2'}"], capture_output=True, text=True, check=True)
    assert done.stdout == f"report: {tmp_path / 'r2' / 'report.html'} (PNGs beside it)\n"


def chromium(*args: str) -> str:
    """Run headless Chromium with a throwaway profile; returns its stdout."""
    profile = tempfile.mkdtemp()
    try:
        done = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             *args], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium on PATH (apt-get install "
                    "-y chromium) to check that the report renders in a real browser")
def test_renders_in_headless_chromium(tmp_path, report):
    assert CHROMIUM is not None, "CI needs chromium on PATH (.ci/run installs it)"
    # Every embedded image decodes in the browser (a broken one added as a control must not), and
    # nothing makes the page scroll sideways at 1200 px.
    probe = ('<img src="data:image/png;base64,AAAA"><script>window.addEventListener("load", () => {'
             'const imgs = [...document.images]; document.body.dataset.images ='
             ' imgs.filter(i => i.complete && i.naturalWidth > 0).length + "/" + imgs.length;'
             ' document.body.dataset.overflow = document.documentElement.scrollWidth > window.innerWidth; });'
             '</script></body>')
    checked = tmp_path / "probe.html"
    checked.write_text(report.read_text().replace("</body>", probe))
    dom = chromium("--dump-dom", "--window-size=1200,3000", checked.as_uri())
    assert 'data-images="10/11"' in dom
    assert 'data-overflow="false"' in dom

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1200)
    dark = pixels < 128
    assert dark.mean() > 0.03  # text and plot lines, not a blank page (measured: 0.067)
    assert dark[:1500].mean() > 0.005 and dark[1500:].mean() > 0.005  # content reaches down the page


def test_stages_follow_each_other_on_one_step_axis(tmp_path):
    from pretrain.evaluation.report import Run, _offsets

    def run(steps):
        return Run(tmp_path, "s", {}, {"train/loss": [(s, 1.0) for s in steps]})

    # stage 2 restarting at step 10 is shifted past stage 1's end; a run that continues the
    # step count (or has no metrics) is not shifted
    assert _offsets([run([10, 20, 30]), run([10, 20]), run([60, 70]), Run(tmp_path, "s", {})]) == [0, 30, 0, 0]
