"""A self-contained HTML report on a preprocessing output and one or more pretraining runs.

`write_report(run_dirs, out_dir, data_dir=..., cloze=...)` writes `out_dir/report.html` with every
plot embedded as a base64 PNG (so the page can be mailed or attached alone) and the same plots as
PNG files beside it. Every section is optional: a missing file or metric becomes a one-line note
in the page instead of an error, because a report is most needed when a run went wrong.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import matplotlib.ticker as ticker
import numpy as np
import yaml

# Figure objects, not pyplot: no GUI backend or global figure state (headless, and importing
# this module does not change the backend of a notebook that uses it).
from matplotlib.figure import Figure

from preprocessing.contract import SPECIAL_ENTITIES, STAT_KEYS, DataDir

# Column labels of the per-language statistics (stats.json keys, in the contract's order).
STAT_LABELS = {"disambiguation": "disambig.", "links_in_vocab": "links in vocab"}
STAT_COLUMNS = tuple((key, STAT_LABELS.get(key, key)) for key in STAT_KEYS)


class ReportError(Exception):
    """A problem the user must fix (e.g. a run directory that does not exist); one line."""


# ---------------------------------------------------------------- reading inputs


@dataclass
class Run:
    """One pretraining run directory: its stage label and metric series {key: [(step, value)]}."""

    path: Path
    stage: str
    config: dict
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ReportError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return config if isinstance(config, dict) else {}


def stage_name(run_dir: Path, config: dict) -> str:
    """`stage` of the run's config (a string, or a mapping with `name`), else the directory name."""
    stage = config.get("stage")
    if isinstance(stage, dict):
        stage = stage.get("name")
    return str(stage) if stage else run_dir.name


def read_metrics(path: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """Numeric series per key from a metrics.jsonl. A step logged twice (a run resumed from an
    earlier checkpoint repeats the steps after it) keeps the later record. Unreadable lines are
    skipped and reported in the returned notes."""
    by_key: dict[str, dict[int, float]] = defaultdict(dict)
    bad = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                bad.append(lineno)
                continue
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    by_key[key][step] = float(value) if math.isfinite(value) else math.nan
    notes = []
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" …" if len(bad) > 5 else "")
        notes.append(f"{path}: skipped {len(bad)} unreadable line(s) (line {shown})")
    return {k: sorted(v.items()) for k, v in by_key.items()}, notes


def load_run(run_dir: Path) -> Run:
    if not run_dir.is_dir():
        raise ReportError(f"run directory not found: {run_dir}")
    config = _read_config(run_dir)
    run = Run(run_dir, stage_name(run_dir, config), config)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        run.series, run.notes = read_metrics(metrics)
    else:
        run.notes.append(f"{metrics} not found: no training curves for this run")
    return run


def config_data_dir(runs: list[Run]) -> Path | None:
    """The preprocessing output a run trained on (`data.dir` in its config.yaml)."""
    for run in runs:
        data = run.config.get("data")
        if isinstance(data, dict) and data.get("dir"):
            return Path(str(data["dir"]))
    return None


@dataclass
class VocabSummary:
    counts: list[int]  # mention counts of the non-special entities, in file order
    num_languages: Counter  # number of languages an entity has a title in -> number of entities


def read_entity_vocab(path: Path) -> VocabSummary:
    counts, languages = [], Counter()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                entry = json.loads(line)
                count = int(entry.get("count", 0))
                titles = [title for title, _ in entry["entities"]]
                langs = {lang for _, lang in entry["entities"] if lang}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ReportError(f"{path}:{lineno}: not an entity vocabulary line ({e!r})") from e
            if all(title in SPECIAL_ENTITIES for title in titles):
                continue  # [PAD] [UNK] [MASK]: listed once per language in the reference's form
            counts.append(count)
            languages[len(langs)] += 1
    return VocabSummary(counts, languages)


# ---------------------------------------------------------------- figures


class Figures:
    """Saves each figure as OUT/<name>.png and keeps its data URI for embedding."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def save(self, fig, name: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)  # metric names become file names
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        data = buf.getvalue()
        (self.out_dir / f"{name}.png").write_bytes(data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return (f'<figure><img src="{uri}" alt="{html.escape(name)}">'
                f'<figcaption><a href="{html.escape(name)}.png">{html.escape(name)}.png</a>'
                f"</figcaption></figure>")


def _offsets(runs: list[Run]) -> list[int]:
    """Step offset per run so that stages follow each other on one axis: a run whose steps start
    again from 0 (stage 2 with a fresh optimizer) is shifted past the end of the previous one."""
    offsets, end = [], 0
    for run in runs:
        steps = [s for points in run.series.values() for s, _ in points]
        offset = end if steps and min(steps) <= end and end > 0 else 0
        offsets.append(offset)
        if steps:
            end = max(end, offset + max(steps))
    return offsets


def _stage_boundaries(ax, runs, offsets):
    """A dotted line where each stage after the first begins (the end of the stages before it)."""
    end = None
    for i, (run, offset) in enumerate(zip(runs, offsets)):
        steps = [s for points in run.series.values() for s, _ in points]
        if steps:
            if i and end is not None:
                ax.axvline(end, color="grey", linestyle=":", linewidth=1)
            end = max(end or 0, offset + max(steps))


def _plot_keys(figures, runs, offsets, keys, name):
    """One panel per key, one line per run (stage)."""
    cols = len(keys) if len(keys) <= 3 else 2 if len(keys) == 4 else 3
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(max(4.2 * cols, 6.0), 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for run, offset in zip(runs, offsets):
            points = run.series.get(key)
            if points:
                ax.plot([s + offset for s, _ in points], [v for _, v in points],
                        label=run.stage, marker="." if len(points) < 30 else None)
        _stage_boundaries(ax, runs, offsets)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_short))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    return figures.save(fig, name)


def _plot_per_language(figures, runs, offsets, metrics, name):
    """One panel per metric ({metric: {lang: key}}), one colour per language; each stage is its
    own segment so that a stage's start is not joined to the previous stage's end."""
    cols = min(2, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(5.2 * cols + 1.2, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    langs = sorted({lang for keys in metrics.values() for lang in keys})
    colors = {lang: matplotlib.colormaps["tab20"](i % 20) for i, lang in enumerate(langs)}
    for ax, (metric, keys) in zip(axes.flat, sorted(metrics.items())):
        for lang, key in sorted(keys.items()):
            label = lang
            for run, offset in zip(runs, offsets):
                points = run.series.get(key, [])
                if points:
                    ax.plot([s + offset for s, _ in points], [v for _, v in points], label=label,
                            color=colors[lang], marker="." if len(points) < 30 else None)
                    label = None  # one legend entry per language
        _stage_boundaries(ax, runs, offsets)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside right center", fontsize=8,
               ncol=1 + len(langs) // 13)
    return figures.save(fig, name)


# ---------------------------------------------------------------- HTML pieces


def _short(value: float, _pos=None) -> str:
    """1,234 / 5.25M / 9.6B: numbers of a full-scale run stay short (also an axis formatter)."""
    if abs(value) >= 1e9:
        return f"{value / 1e9:.3g}B"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.4g}"


def _fmt(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value):
            return "–"
        if abs(value) >= 1e6:  # keeps 24-language tables on the page; the exact value on hover
            return f'<span title="{value:,.0f}">{_short(value)}</span>'
        if isinstance(value, float) and abs(value) < 1000:
            return f"{value:,.4g}"
        return f"{value:,.0f}"
    return html.escape(str(value))


def _table(header, rows, cls="") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    # the wrapper scrolls a table wider than the page (24 languages, billions of tokens) on its own
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _data_section(data_dir: Path | None, figures: Figures) -> str:
    parts = ["<h2>Data</h2>"]
    if data_dir is None:
        return parts[0] + _note("no preprocessing output given (data=OUT, or data.dir in a run's config.yaml)")
    parts.append(f"<p>Preprocessing output: <code>{html.escape(str(data_dir))}</code></p>")
    stats_path = DataDir(data_dir).stats
    if stats_path.is_file():
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ReportError(f"{stats_path}: not valid JSON ({e})") from e
        if not isinstance(stats, dict) or not all(isinstance(s, dict) for s in stats.values()):
            raise ReportError(f"{stats_path}: expected {{lang: {{count: n, ...}}}}")
        rows, totals = [], [0] * len(STAT_COLUMNS)
        for lang, s in stats.items():
            row = []
            for i, (key, _) in enumerate(STAT_COLUMNS):
                value = s.get(key, 0)  # an older or partial run may lack a count
                if key == "skipped" and isinstance(value, dict):
                    value = sum(value.values())
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ReportError(f"{stats_path}: {lang}.{key} is not a number: {value!r}")
                row.append(value)
                totals[i] += value
            rows.append([lang] + row)
        rows.append(["total"] + totals)
        links, in_vocab = (STAT_KEYS.index(k) + 1 for k in ("links", "links_in_vocab"))  # +1: the lang column
        for row in rows:  # the share of links whose target is in the entity vocabulary
            row.insert(in_vocab + 1, f"{100 * row[in_vocab] / row[links]:.1f}%" if row[links] else "–")
        header = ["lang"] + [label for _, label in STAT_COLUMNS]
        header.insert(in_vocab + 1, "in vocab %")
        parts.append("<h3>Per-language statistics</h3>")
        parts.append(_table(header, rows, "totals"))
        skipped = Counter()
        for s in stats.values():
            skipped.update(s.get("skipped", {}) if isinstance(s.get("skipped"), dict) else {})
        if skipped:
            parts.append("<p>Skipped (pages or examples) by reason: " + ", ".join(
                f"{html.escape(r)} {n:,}" for r, n in sorted(skipped.items())) + "</p>")
        truncated = [lang for lang, s in stats.items() if s.get("truncated")]
        if truncated:
            parts.append(_note(f"truncated dump(s), counts cover only what was read: {', '.join(truncated)}"))
        if stats:
            parts.append(_stats_figure(stats, figures))
    else:
        parts.append(_note(f"{stats_path} not found: no per-language statistics"))

    vocab_path = DataDir(data_dir).entity_vocab
    if vocab_path.is_file():
        parts.append(_vocab_section(read_entity_vocab(vocab_path), figures))
    else:
        parts.append(_note(f"{vocab_path} not found: no entity vocabulary plots"))
    return "\n".join(parts)


def _stats_figure(stats: dict, figures: Figures) -> str:
    langs = list(stats)
    keys = [k for k in ("links", "links_in_vocab", "examples") if any(stats[lang].get(k) for lang in langs)]
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        axes[0].bar([j + i * width for j in range(len(langs))], [stats[lang].get(key, 0) for lang in langs],
                    width=width, label=key)
    axes[0].set_title("links and examples per language", fontsize=10)
    axes[1].bar(range(len(langs)), [stats[lang].get("tokens", 0) for lang in langs], color="tab:purple")
    axes[1].set_title("tokens per language", fontsize=10)
    for ax in axes:
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_short))
        ax.set_xticks([j + (0.4 - width / 2 if ax is axes[0] else 0) for j in range(len(langs))])
        ax.set_xticklabels(langs)
        ax.grid(alpha=0.3, axis="y")
    if keys:
        axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.2)  # room for the legend above the bars
        axes[0].legend(fontsize=8, ncol=len(keys), loc="upper center")
    fig.tight_layout()
    return figures.save(fig, "data_per_language")


def _log_label(value: float, _pos) -> str:
    exponent = round(math.log10(value)) if value > 0 else 0
    if value >= 1e5 and math.isclose(value, 10.0**exponent):
        return f"$10^{{{exponent}}}$"
    return f"{value:g}" if value < 1e5 else ""


def _vocab_section(vocab: VocabSummary, figures: Figures) -> str:
    parts = ["<h3>Entity vocabulary</h3>"]
    n = len(vocab.counts)
    multi = sum(v for k, v in vocab.num_languages.items() if k >= 2)
    parts.append(_table(
        ["entities (excl. special)", "total mentions", "in ≥ 2 languages", "max languages"],
        [[n, sum(vocab.counts), multi, max(vocab.num_languages, default=0)]]))
    if not n:
        return "\n".join(parts)
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 2)
    counts = sorted((c for c in vocab.counts if c > 0), reverse=True)
    if counts:
        # ~2000 log-spaced ranks draw the same curve as a million points, much faster
        ranks = sorted({int(r) for r in np.geomspace(1, len(counts), 2000).round()})
        axes[0].loglog(ranks, [counts[r - 1] for r in ranks], marker="." if len(counts) < 100 else None)
        for axis in (axes[0].xaxis, axes[0].yaxis):  # 1 … 10000 as plain numbers, then 10⁵, 10⁶ …
            axis.set_major_formatter(ticker.FuncFormatter(_log_label))
            axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))
    axes[0].set_title("entity frequency distribution", fontsize=10)
    axes[0].set_xlabel("rank")
    axes[0].set_ylabel("mentions in the corpus")
    axes[0].grid(alpha=0.3, which="both")
    ks = list(range(min(1, *vocab.num_languages), max(vocab.num_languages) + 1))
    axes[1].bar(ks, [vocab.num_languages[k] for k in ks], color="tab:green")
    axes[1].set_xticks(ks)
    axes[1].tick_params(axis="x", labelsize=10 if len(ks) <= 12 else 7)
    axes[1].set_title("cross-language coverage", fontsize=10)
    axes[1].set_xlabel("number of languages the entity has a title in")
    axes[1].set_ylabel("entities")
    axes[1].yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes[1].yaxis.set_major_formatter(ticker.FuncFormatter(_short))
    axes[1].grid(alpha=0.3, axis="y")
    fig.tight_layout()
    parts.append(figures.save(fig, "entity_vocab"))
    parts.append(_table(["languages"] + [str(k) for k in ks], [["entities"] + [vocab.num_languages[k] for k in ks]],
                        "coverage"))
    return "\n".join(parts)


def _split_keys(runs: list[Run]):
    """Classify metric keys: per-language (`train/<lang>/x`, `eval/<lang>/x`), throughput, the rest."""
    # training metrics first, then validation, then the rest (alphabetical within each)
    order = {"train": 0, "eval": 1}
    keys = sorted({k for run in runs for k in run.series}, key=lambda k: (order.get(k.split("/")[0], 2), k))
    per_lang: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # (prefix, metric) -> lang -> key
    throughput, scalar = [], []
    for key in keys:
        parts = key.split("/")
        if len(parts) == 3:
            per_lang[(parts[0], parts[2])][parts[1]] = key
        elif parts[0] == "throughput":
            throughput.append(key)
        else:
            scalar.append(key)
    return per_lang, throughput, scalar


def _training_section(runs: list[Run], figures: Figures) -> str:
    parts = ["<h2>Training</h2>"]
    if not runs:
        return parts[0] + _note("no run directory given")
    rows = []
    for run in runs:
        loss = run.series.get("train/loss", [])
        tps = [v for _, v in run.series.get("throughput/tokens_per_s", []) if not math.isnan(v)]
        steps = [s for points in run.series.values() for s, _ in points]
        rows.append([run.stage, str(run.path), max(steps) if steps else "–",
                     loss[0][1] if loss else math.nan, loss[-1][1] if loss else math.nan,
                     sum(tps) / len(tps) if tps else math.nan])
    parts.append(_table(["stage", "run directory", "last step", "first loss", "last loss", "mean tokens/s"],
                        rows, "runs"))
    parts += [_note(note) for run in runs for note in run.notes]
    if not any(run.series for run in runs):
        return "\n".join(parts)

    offsets = _offsets(runs)
    per_lang, throughput, scalar = _split_keys(runs)
    losses = [k for k in scalar if k.split("/")[-1].startswith("loss")]
    accs = [k for k in scalar if k.split("/")[-1].startswith("acc")]
    others = [k for k in scalar if k not in losses and k not in accs]
    if len(runs) > 1:
        parts.append("<p>Stages follow each other on one step axis; dotted lines mark where a stage begins.</p>")
    for keys, name, title in ((losses, "losses", "Losses"), (accs, "accuracy", "Accuracy"),
                              (others, "other_metrics", "Other training metrics")):
        if keys:
            parts.append(f"<h3>{title}</h3>")
            parts.append(_plot_keys(figures, runs, offsets, keys, name))

    eval_acc = {metric: langs for (prefix, metric), langs in per_lang.items()
                if prefix == "eval" and metric.startswith("acc")}
    parts.append("<h3>Validation accuracy per language</h3>")
    if eval_acc:
        parts.append(_plot_per_language(figures, runs, offsets, eval_acc, "eval_accuracy_per_language"))
        parts.append(_eval_table(runs, eval_acc))
    else:
        parts.append(_note("no eval/<lang>/acc_... metrics in metrics.jsonl"))

    rest = [key for key in per_lang if not (key[0] == "eval" and key[1] in eval_acc)]
    for prefix in dict.fromkeys(prefix for prefix, _ in rest):  # e.g. train losses, eval losses
        metrics = {metric: per_lang[(p, metric)] for p, metric in rest if p == prefix}
        title = {"train": "Training", "eval": "Validation"}.get(prefix, prefix.capitalize())
        parts.append(f"<h3>{html.escape(title)} metrics per language</h3>")
        parts.append(_plot_per_language(figures, runs, offsets, metrics, f"{prefix}_per_language"))

    parts.append("<h3>Throughput</h3>")
    if throughput:
        parts.append(_plot_keys(figures, runs, offsets, throughput, "throughput"))
    else:
        parts.append(_note("no throughput/... metrics in metrics.jsonl"))
    return "\n".join(parts)


def _eval_table(runs, eval_keys) -> str:
    """The last validation value of each stage, per language and metric."""
    metrics = sorted(eval_keys)
    langs = sorted({lang for keys in eval_keys.values() for lang in keys})
    header = ["lang"] + [f"{metric} ({run.stage})" for run in runs for metric in metrics]
    rows = []
    for lang in langs:
        row = [lang]
        for run in runs:
            for metric in metrics:
                points = run.series.get(eval_keys[metric].get(lang, ""), [])
                row.append(f"{points[-1][1]:.3f}" if points else "–")
        rows.append(row)
    return "<p>Last validation value of each stage:</p>" + _table(header, rows, "eval")


def _cloze_section(cloze: Path | None, figures: Figures) -> str:
    if cloze is None:
        return ""
    try:
        results = json.loads(cloze.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"{cloze}: cannot read cloze results ({e})") from e
    kinds = [k for k in ("word", "entity") if isinstance(results.get(k), dict)]
    langs = sorted({lang for k in kinds for lang in results[k]})
    counts = results.get("counts", {})  # launch/evaluate.py adds {kind: {lang: {correct, total}}}

    def cell(kind, lang):
        acc = results[kind].get(lang)
        if acc is None:
            return "–"
        n = counts.get(kind, {}).get(lang)
        return f"{acc:.3f}" + (f" ({n['correct']}/{n['total']})" if n else "")

    skipped = results.get("skipped") or {}  # {lang: {reason: n}}: facts with no usable prompt
    rows = [[lang] + [cell(k, lang) for k in kinds] for lang in langs]
    if skipped:
        for row in rows:
            row.append(", ".join(f"{r}={n}" for r, n in skipped.get(row[0], {}).items()) or "–")
    if langs:  # macro average over languages, as the mLUKE paper reports
        rows.append(["mean"] + [f"{sum(results[k].values()) / len(results[k]):.3f}" if results[k] else "–"
                                for k in kinds] + ([""] if skipped else []))
    header = ["lang"] + [f"{k} prompts" for k in kinds] + (["skipped"] if skipped else [])
    parts = ["<h2>Cloze evaluation</h2>",
             f"<p>Top-1 accuracy from <code>{html.escape(str(cloze))}</code>.</p>",
             _table(header, rows, "totals")]
    if langs:
        fig = Figure(figsize=(max(5.0, 0.6 * len(langs) * len(kinds)), 3.2))
        ax = fig.subplots()
        width = 0.8 / len(kinds)
        for i, k in enumerate(kinds):
            ax.bar([j + i * width for j in range(len(langs))], [results[k].get(lang, 0) for lang in langs],
                   width=width, label=f"{k} prompts")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(langs))])
        ax.set_xticklabels(langs)
        ax.set_ylim(0, 1)
        ax.set_ylabel("top-1 accuracy")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        parts.append(figures.save(fig, "cloze"))
    return "\n".join(parts)


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.45em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
table.totals tbody tr:last-child td { font-weight: bold; border-top: 2px solid #999; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.8em; color: #666; }
.note { color: #8a5a00; background: #fff6e0; padding: 0.3em 0.6em; border-left: 3px solid #e0a000; }
code { background: #f3f3f3; padding: 0 0.2em; }
.scroll { overflow-x: auto; }
"""


def write_report(run_dirs, out_dir, data_dir=None, cloze=None) -> Path:
    """Write OUT_DIR/report.html (self-contained) and the plots as PNGs; returns the HTML path.

    data_dir defaults to `data.dir` of the runs' config.yaml; cloze is an optional results JSON
    {"word": {lang: acc}, "entity": {lang: acc}}."""
    runs = [load_run(Path(d)) for d in run_dirs]
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise ReportError(f"data directory not found: {data_dir}")
    else:
        data_dir = config_data_dir(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = Figures(out_dir)

    sections = []
    if data_dir is not None and not data_dir.is_dir():
        sections.append("<h2>Data</h2>" + _note(f"data directory from the run config not found: {data_dir}"))
    else:
        sections.append(_data_section(data_dir, figures))
    sections.append(_training_section(runs, figures))
    sections.append(_cloze_section(Path(cloze) if cloze else None, figures))

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>mLUKE pretraining report</title>"
        f"<style>{CSS}</style></head><body>\n"
        f"<h1>mLUKE pretraining report</h1><p class=\"meta\">Written {stamp}; runs: "
        + (", ".join(f"<code>{html.escape(r.stage)}</code> ({html.escape(str(r.path))})" for r in runs) or "none")
        + "</p>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
