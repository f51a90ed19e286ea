"""Throughput of the preprocessing stages on one dump, against wikiextractor.

    python benchmarks/preprocess.py DUMP [--lang en] [--workers 1 2] [--replicate K]

Each measurement runs in a fresh subprocess so that its peak memory (RSS of the process and all
its workers, sampled every 50 ms) and its CPU time are its own. Printed per stage and worker
count: pages/s, compressed MB/s, CPU seconds, pages per CPU-second (per-core throughput) and
peak memory; then wikiextractor 3.1.0 (text only, one extraction process) on the same file and
the ratios. `--replicate K` first builds a K-times larger dump out of DUMP's pages (bz2, one
stream per 100 pages like Wikimedia's multistream files), to amortize start-up and to show
that memory stays flat as the dump grows.

A stage is one function `(dump, lang, workers, tmp_dir) -> pages` in STAGES; the harness does
the timing and memory.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def stage_extract(dump: Path, lang: str, workers: int, tmp: Path) -> int:
    from preprocessing.extract import extract_dump

    return extract_dump(dump, lang, tmp / "pages", num_workers=workers, progress=False)["pages"]


def stage_wikiextractor(dump: Path, lang: str, workers: int, tmp: Path) -> int:
    out = tmp / "wikiextractor"
    subprocess.run([sys.executable, "-m", "wikiextractor.WikiExtractor", "--no-templates", "-q",
                    "--processes", str(workers), "-o", str(out), str(dump)], check=True)
    return sum(f.read_text(encoding="utf-8").count("<doc ") for f in out.rglob("wiki_*"))


def stage_pipeline(dump: Path, lang: str, workers: int, tmp: Path) -> int:
    """extract → entity_vocab → dataset, as `launch/preprocess.py` runs them (no Wikidata)."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run_pipeline

    cfg = PreprocessConfig(out_dir=str(tmp / "out"), dumps={lang: str(dump)},
                           tokenizer=os.environ["BENCH_TOKENIZER"], num_workers=workers,
                           progress=False, stages=["extract", "entity_vocab", "dataset"])
    cfg.entity_vocab.min_num_languages = 1
    stats = run_pipeline(cfg)[lang]
    print(f"  [{workers} workers] {stats['examples']} examples, {stats['tokens']} tokens, "
          f"{stats['entities']} entities", file=sys.stderr)
    return stats["pages"]


STAGES = {"extract": stage_extract, "pipeline": stage_pipeline,
          "wikiextractor": stage_wikiextractor}


def build_tokenizer(dump: Path, out: Path, vocab_size: int) -> Path:
    """A stand-in XLM-R tokenizer trained on the dump's text, for when the real one is absent."""
    from pretrain.standin import build_standin_tokenizer, dump_texts

    return build_standin_tokenizer(out, dump_texts([dump], max_pages=300), vocab_size=vocab_size)


def watch(proc: subprocess.Popen, interval: float = 0.05) -> tuple[float, dict[int, float]]:
    """From outside (so that sampling costs the measured run nothing): peak summed RSS of the
    process tree, and the last CPU time seen of each descendant (the workers of a forkserver
    pool are not children of the measured process, so its rusage misses them)."""
    root = psutil.Process(proc.pid)
    peak, cpu = 0, {}
    while proc.poll() is None:
        total = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in tree:
            try:
                total += p.memory_info().rss
                if p.pid != root.pid:
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(interval)
    return peak, cpu


def run_one(stage: str, dump: Path, lang: str, workers: int) -> dict:
    """In the measured subprocess: run one stage, report its wall and CPU time."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pages = STAGES[stage](dump, lang, workers, Path(tmp))
        wall = time.perf_counter() - start
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"pages": pages, "wall": wall, "main_cpu": me.ru_utime + me.ru_stime,
            "children_cpu": children.ru_utime + children.ru_stime}


def measure(stage: str, dump: Path, lang: str, workers: int) -> dict:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--run-one", stage, str(dump), "--lang", lang,
         "--workers", str(workers)], stdout=subprocess.PIPE, text=True)
    peak, cpu = watch(proc)
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{stage} with {workers} workers failed (exit {proc.returncode})")
    r = json.loads(out.strip().splitlines()[-1])
    r["cpu"] = r["main_cpu"] + max(r["children_cpu"], sum(cpu.values()))
    r["peak_mb"] = peak / 2**20
    return r


def _spin(_=None) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.perf_counter() - start


def parallel_capacity(n: int) -> float:
    """How much faster n CPU-bound processes run together than one does, right now: on a busy
    or hyper-threaded machine this is below n, and so is any speed-up measured next to it."""
    import multiprocessing

    one = _spin()
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        pool.map(_spin, range(n))  # warm up the processes
        start = time.perf_counter()
        pool.map(_spin, range(n))
        together = time.perf_counter() - start
    return n * one / together


def replicate(dump: Path, times: int, out: Path) -> Path:
    """A dump with DUMP's pages repeated `times` times, as a multistream bz2."""
    from preprocessing.dumps import open_dump

    with open_dump(dump) as f:
        xml = f.read().decode("utf-8")
    head, _, rest = xml.partition("  <page>")
    pages = ("  <page>" + rest).rpartition("</mediawiki>")[0].split("  <page>")[1:]
    pages = ["  <page>" + p for p in pages] * times
    with open(out, "wb") as f:
        f.write(bz2.compress(head.encode()))
        for i in range(0, len(pages), 100):
            f.write(bz2.compress("".join(pages[i:i + 100]).encode()))
        f.write(bz2.compress(b"</mediawiki>\n"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump", type=Path)
    ap.add_argument("--lang", default="en")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stages", nargs="+", default=["extract"],
                    choices=[s for s in STAGES if s != "wikiextractor"])
    ap.add_argument("--replicate", type=int, default=1, help="build a K-times larger dump first")
    ap.add_argument("--no-wikiextractor", action="store_true")
    ap.add_argument("--tokenizer", help="XLM-R tokenizer for the pipeline stage (name or dir); "
                    "default: a stand-in trained on the dump")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args.run_one, args.dump, args.lang, args.workers[0])))
        return

    with tempfile.TemporaryDirectory() as tmp:
        dump = args.dump
        if args.replicate > 1:
            big = Path(tmp) / f"replicated-x{args.replicate}.xml.bz2"
            dump = replicate(dump, args.replicate, big)
        mb = dump.stat().st_size / 1e6
        if "pipeline" in args.stages:
            os.environ["BENCH_TOKENIZER"] = args.tokenizer or str(
                build_tokenizer(dump, Path(tmp) / "tokenizer", args.vocab_size))
        print(f"dump {dump.name}: {mb:.1f} MB compressed; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.1f} (other processes skew wall times)")
        print(f"{'stage':<14}{'workers':>8}{'pages':>8}{'wall s':>9}{'pages/s':>9}{'MB/s':>7}"
              f"{'CPU s':>8}{'main CPU s':>11}{'pages/CPU-s':>12}{'peak MB':>9}")
        results = {}
        runs = [(s, w) for s in args.stages for w in args.workers]
        if not args.no_wikiextractor:
            runs.append(("wikiextractor", 1))
        for stage, workers in runs:
            r = measure(stage, dump, args.lang, workers)
            results[stage, workers] = r
            print(f"{stage:<14}{workers:>8}{r['pages']:>8}{r['wall']:>9.2f}"
                  f"{r['pages'] / r['wall']:>9.1f}{mb / r['wall']:>7.2f}{r['cpu']:>8.2f}"
                  f"{r['main_cpu']:>11.2f}{r['pages'] / r['cpu']:>12.1f}{r['peak_mb']:>9.0f}")
        most = max(args.workers)
        if most > 1:
            print(f"machine check: {most} CPU-bound processes run {parallel_capacity(most):.2f}x "
                  f"as fast as one right now")
        for stage in args.stages:
            one = results.get((stage, 1))
            for workers in args.workers:
                if one and workers > 1:
                    r = results[stage, workers]
                    # On `workers` idle cores the wall time is bounded by the total CPU spread over
                    # the cores and by the main process (reading, decompression, writing).
                    bound = max(r["cpu"] / min(workers, os.cpu_count()), r["main_cpu"])
                    print(f"{stage}: {workers} workers = {one['wall'] / r['wall']:.2f}x one worker "
                          f"(wall); {one['cpu'] / bound:.2f}x on idle cores (from CPU times)")
        we = results.get(("wikiextractor", 1))
        full = results.get(("pipeline", 1))
        if we and full:
            print(f"full pipeline vs wikiextractor on the same dump: per core "
                  f"{we['cpu'] / full['cpu']:.2f}x")
        one = results.get(("extract", 1))
        if we and one:
            # Same input file, so throughput ratios are ratios of time. Per core: CPU seconds of
            # all processes. (Page counts differ: extract keeps articles only, wikiextractor
            # also writes disambiguation pages.)
            print(f"extract vs wikiextractor on the same dump: per core "
                  f"{we['cpu'] / one['cpu']:.2f}x (dump MB per CPU-second), "
                  f"wall with one worker each {we['wall'] / one['wall']:.2f}x")

if __name__ == "__main__":
    main()
