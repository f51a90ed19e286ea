"""Preprocessing speed, scaling, memory and resumption, side by side with wikiextractor.

    python benchmarks/preprocess.py DUMP [--lang en] [--replicate K] [--workers N] [--tokenizer T]
    python benchmarks/preprocess.py --smoke

From DUMP's pages (K times over) it writes a multistream dump with its index (one bz2 stream per
100 pages, as Wikimedia's), the same XML as one bz2 stream (a "plain" dump), and a multistream
dump 8 times larger. Every measurement runs in a fresh subprocess: wall time, CPU time of all its
processes and peak memory (the sum of each process's peak RSS, the kernel's VmHWM, read from
outside every 50 ms) are its own. Figures:

- pipeline_vs_wikiextractor: wikiextractor's CPU time over our full pipeline's (extract →
  entity_vocab → dataset, 1 worker) on the same file; with dataset.keep_unknown_entities=true,
  so that the dataset holds every link, as large as a real run's (an excerpt's links mostly point
  outside it). `_wall`: the same with wall times.
- multistream_Nw_speedup, plain_Nw_speedup: extract's wall time with 1 worker over N workers;
  multistream_xM_Nw_speedup the same on the M times larger dump (where the pool's start-up and its
  last, unevenly shared chunks weigh less, as in a real dump); wikiextractor_Nw_speedup: the same
  for wikiextractor's --processes.
- extract_peak_mem_ratio: peak memory of extract (N workers) on the 8x dump (--memory-scale) over
  the 1x dump; wikiextractor's beside it.
- resume_time_ratio: the pipeline killed (SIGKILL, all its processes) halfway through an
  uninterrupted run's wall time, then started again: the second run's wall time over the
  uninterrupted run's (wikiextractor starts over: 1.0).
- `_idle` speed-ups: what N idle cores would give, from CPU times: one worker's CPU time over
  the larger of N workers' CPU time / N and their main process's CPU time.
- capacity_Nproc: how much faster N CPU-bound processes run than one, right now; a wall-time
  speed-up measured on a busy machine is bounded by it. extract_capacity_Nproc: the same with
  N independent 1-worker extracts side by side (shared caches and memory bandwidth count too).

The last line prints the figures as name=value pairs. `--smoke` runs all of it on the bundled
English sample in a few seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "sample" / "dumps" / "enwiki-sample.xml"


# ---------------------------------------------------------------- what a measured process runs
def stage_extract(args) -> int:
    from preprocessing.extract import extract_dump

    return extract_dump(args.dump, args.lang, Path(args.out) / "pages", num_workers=args.workers,
                        progress=False)["pages"]


def stage_pipeline(args) -> int:
    """extract → entity_vocab → dataset, as `launch/preprocess.py` runs them (no Wikidata)."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run_pipeline

    cfg = PreprocessConfig(out_dir=str(Path(args.out) / "out"), dumps={args.lang: str(args.dump)},
                           tokenizer=args.tokenizer, num_workers=args.workers, progress=False,
                           stages=["extract", "entity_vocab", "dataset"])
    cfg.entity_vocab.min_num_languages = 1
    cfg.dataset.keep_unknown_entities = True
    stats = run_pipeline(cfg)[args.lang]
    print(f"  [pipeline, {args.workers} workers] {stats['examples']} examples, {stats['tokens']} tokens, "
          f"{stats['entities']} entities", file=sys.stderr)
    return stats["pages"]


def stage_wikiextractor(args) -> int:
    out = Path(args.out) / "wikiextractor"
    subprocess.run([sys.executable, "-m", "wikiextractor.WikiExtractor", "--no-templates", "-q",
                    "--processes", str(args.workers), "-o", str(out), str(args.dump)], check=True)
    return sum(f.read_text(encoding="utf-8").count("<doc ") for f in out.rglob("wiki_*"))


STAGES = {"extract": stage_extract, "pipeline": stage_pipeline, "wikiextractor": stage_wikiextractor}


def run_one(args) -> dict:
    start = time.perf_counter()
    pages = STAGES[args.run_one](args)
    wall = time.perf_counter() - start
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"pages": pages, "wall": wall, "main_cpu": me.ru_utime + me.ru_stime}


# ---------------------------------------------------------------- measuring from outside
def measure(stage: str, dump: Path, workers: int, out: Path, tokenizer: str = "", lang: str = "en",
            kill_after: float | None = None) -> dict | None:
    """Run one stage in a subprocess (its own session); peak summed RSS and the CPU time of every
    process of the tree, sampled from outside. `kill_after` seconds: SIGKILL the whole session
    then (returns None)."""
    cmd = [sys.executable, __file__, "--run-one", stage, str(dump), "--workers", str(workers),
           "--out", str(out), "--lang", lang, "--tokenizer", tokenizer]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    root = psutil.Process(proc.pid)
    peak, cpu = {}, {}
    while proc.poll() is None:
        if kill_after is not None and time.perf_counter() - start >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(1.5)  # the pool's workers notice and exit
            return None
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in tree:
            try:
                peak[p.pid] = max(peak.get(p.pid, 0), _peak_rss(p))
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        time.sleep(0.05)
    output, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{stage} with {workers} workers failed (exit {proc.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    main = cpu.pop(proc.pid, 0.0)
    result["cpu"] = sum(cpu.values()) + max(main, result["main_cpu"])
    result["peak_mb"] = sum(peak.values()) / 2**20  # each process at its own peak: an upper bound
    return result


def _peak_rss(p: psutil.Process) -> int:
    """The process's peak RSS so far as the kernel counts it (Linux: VmHWM), else its RSS now."""
    try:
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return p.memory_info().rss


def _bound(run: dict, n: int) -> float:
    return max(run["cpu"] / min(n, os.cpu_count() or n), run["main_cpu"])


def _spin(_=None) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(5_000_000):
        x += i
    return time.perf_counter() - start


def parallel_capacity(n: int) -> float:
    """How much faster n CPU-bound processes run together than one does, right now."""
    import multiprocessing

    one = min(_spin() for _ in range(2))
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        pool.map(_spin, range(n))
        start = time.perf_counter()
        pool.map(_spin, range(n))
        together = time.perf_counter() - start
    return n * one / together


def side_by_side(n: int, dump: Path, out: Path) -> float:
    """The same capacity measured with the workload itself: n independent 1-worker extracts run
    at once; n x one's wall time alone over the slowest's. Parsing shares caches and memory
    bandwidth as a spin loop does not, so this is the ceiling of an n-worker speed-up here."""
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> float:
        (out / str(k)).mkdir(parents=True, exist_ok=True)
        return measure("extract", dump, 1, out / str(k))["wall"]

    alone = one(n)
    with ThreadPoolExecutor(n) as pool:
        together = max(pool.map(one, range(n)))
    return n * alone / together


# ---------------------------------------------------------------- inputs
def page_xml(dump: Path, times: int) -> bytes:
    """DUMP's XML with its pages repeated `times` times."""
    from preprocessing.dumps import open_dump

    with open_dump(dump) as f:
        xml = f.read().decode("utf-8")
    head, _, rest = xml.partition("  <page>")
    body = ("  <page>" + rest).rpartition("</mediawiki>")[0]
    return (head + body * times + "</mediawiki>\n").encode("utf-8")


def build_inputs(dump: Path, times: int, tmp: Path, scale: int) -> dict[str, Path]:
    import bz2

    from preprocessing.multistream import write_multistream

    xml = page_xml(dump, times)
    inputs = {"multistream": write_multistream(xml, tmp / "enwiki-multistream.xml.bz2")[0],
              "plain": tmp / "enwiki-plain.xml.bz2"}
    inputs["plain"].write_bytes(bz2.compress(xml))
    (tmp / "big").mkdir()
    inputs["multistream_big"] = repeat_streams(inputs["multistream"], scale, tmp / "big")
    return inputs


def repeat_streams(dump: Path, times: int, out_dir: Path) -> Path:
    """A multistream dump (and index) with the page streams of `dump` repeated `times` times:
    the same compressed bytes, so it takes no recompression."""
    import bz2

    from preprocessing.multistream import _STREAM_START, find_index_name

    data = dump.read_bytes()
    lines = bz2.decompress(find_index_name(dump).read_bytes()).decode("utf-8").splitlines(keepends=True)
    first = int(lines[0].split(":", 1)[0])
    closing = [m.start() for m in _STREAM_START.finditer(data)][-1]  # the stream with </mediawiki>
    body = data[first:closing]
    out = out_dir / dump.name
    out.write_bytes(data[:first] + body * times + data[closing:])
    index = [f"{int(o) + k * len(body)}:{rest}" for k in range(times)
             for o, rest in (line.split(":", 1) for line in lines)]
    find_index_name(out).write_bytes(bz2.compress("".join(index).encode("utf-8")))
    return out


def build_tokenizer(dump: Path, out: Path, vocab_size: int) -> Path:
    """A stand-in XLM-R tokenizer trained on the dump's text, for when the real one is absent."""
    from pretrain.standin import build_standin_tokenizer, dump_texts

    return build_standin_tokenizer(out, dump_texts([dump], max_pages=300), vocab_size=vocab_size)


# ---------------------------------------------------------------- the run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dump", type=Path, nargs="?")
    ap.add_argument("--lang", default="en")
    ap.add_argument("--workers", type=int, default=2, help="N of the scaling figures")
    ap.add_argument("--replicate", type=int, default=1, help="use DUMP's pages K times over")
    ap.add_argument("--memory-scale", type=int, default=8, help="size of the larger dump for memory")
    ap.add_argument("--tokenizer", default="", help="XLM-R tokenizer (name or dir) for the pipeline; "
                    "default: a stand-in trained on the dump")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--repeat", type=int, default=1, help="run each measurement R times and report "
                    "medians (for busy machines)")
    ap.add_argument("--smoke", action="store_true", help="the bundled English sample, tiny sizes")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        args.dump = str(args.dump)
        print(json.dumps(run_one(args)))
        return
    if args.smoke:
        args.dump, args.replicate, args.memory_scale, args.vocab_size = SAMPLE, 4, 4, 400
    if args.dump is None:
        ap.error("give a DUMP, or --smoke")

    n = args.workers
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = build_inputs(args.dump, args.replicate, tmp, args.memory_scale)
        tokenizer = args.tokenizer or str(build_tokenizer(inputs["plain"], tmp / "tokenizer", args.vocab_size))
        mb = inputs["plain"].stat().st_size / 1e6
        print(f"{args.dump.name} x{args.replicate}: {mb:.1f} MB bz2; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.1f} (other processes skew wall times)")
        print(f"{'run':<34}{'pages':>7}{'wall s':>9}{'CPU s':>8}{'main CPU s':>11}{'peak MB':>9}")
        runs = {}

        def run(name, stage, dump, workers, repeat=args.repeat, **kwargs):
            out = tmp / "runs" / name
            out.mkdir(parents=True, exist_ok=True)
            r = measure(stage, dump, workers, out, tokenizer, args.lang, **kwargs)
            if r is not None and repeat > 1:  # the median of each figure over the repetitions
                import shutil
                import statistics

                tries = [r]
                for _ in range(repeat - 1):
                    shutil.rmtree(out)
                    out.mkdir()
                    tries.append(measure(stage, dump, workers, out, tokenizer, args.lang))
                r = {k: statistics.median(t[k] for t in tries) for k in r}
            if r is not None:
                runs[name] = r
                print(f"{name:<34}{r['pages']:>7}{r['wall']:>9.2f}{r['cpu']:>8.2f}{r['main_cpu']:>11.2f}"
                      f"{r['peak_mb']:>9.0f}", flush=True)
            return r

        for kind in ("multistream", "plain"):
            for workers in (1, n):
                run(f"extract {kind} {workers}w", "extract", inputs[kind], workers)
        for workers in (1, n):
            run(f"wikiextractor {workers}p", "wikiextractor", inputs["plain"], workers)
        for workers in (1, n):  # scaling where start-up and the last chunks weigh less, as in a real dump
            run(f"extract multistream x{args.memory_scale} {workers}w", "extract", inputs["multistream_big"], workers)
        run(f"wikiextractor x{args.memory_scale} {n}p", "wikiextractor", inputs["multistream_big"], n)
        full = run("pipeline 1w", "pipeline", inputs["multistream"], 1)
        # Killed halfway through, then started again on the same output directory.
        resume_dir = "pipeline 1w killed, then resumed"
        run(resume_dir, "pipeline", inputs["multistream"], 1, repeat=1, kill_after=full["wall"] / 2)
        resumed = run(resume_dir, "pipeline", inputs["multistream"], 1, repeat=1)
        capacity = parallel_capacity(n)
        workload_capacity = side_by_side(n, inputs["multistream"], tmp / "side_by_side")

        we1, wen = runs["wikiextractor 1p"], runs[f"wikiextractor {n}p"]
        figures = {
            "pipeline_vs_wikiextractor": we1["cpu"] / full["cpu"],
            "pipeline_vs_wikiextractor_wall": we1["wall"] / full["wall"],
            "extract_vs_wikiextractor": we1["cpu"] / runs["extract multistream 1w"]["cpu"],
            f"multistream_{n}w_speedup": runs["extract multistream 1w"]["wall"] / runs[f"extract multistream {n}w"]["wall"],
            f"plain_{n}w_speedup": runs["extract plain 1w"]["wall"] / runs[f"extract plain {n}w"]["wall"],
            f"multistream_x{args.memory_scale}_{n}w_speedup": runs[f"extract multistream x{args.memory_scale} 1w"]["wall"]
            / runs[f"extract multistream x{args.memory_scale} {n}w"]["wall"],
            f"wikiextractor_{n}w_speedup": we1["wall"] / wen["wall"],
            # On n idle cores: the CPU time spread over the cores, or the main process, bounds it.
            f"multistream_{n}w_speedup_idle": runs["extract multistream 1w"]["cpu"] / _bound(runs[f"extract multistream {n}w"], n),
            f"plain_{n}w_speedup_idle": runs["extract plain 1w"]["cpu"] / _bound(runs[f"extract plain {n}w"], n),
            "extract_peak_mem_ratio":
                runs[f"extract multistream x{args.memory_scale} {n}w"]["peak_mb"] / runs[f"extract multistream {n}w"]["peak_mb"],
            "wikiextractor_peak_mem_ratio":
                runs[f"wikiextractor x{args.memory_scale} {n}p"]["peak_mb"] / wen["peak_mb"],
            "resume_time_ratio": resumed["wall"] / full["wall"],
            f"capacity_{n}proc": capacity,
            f"extract_capacity_{n}proc": workload_capacity,
        }
        print(f"machine check: {n} CPU-bound processes run {capacity:.2f}x as fast as one right now; "
              f"{n} independent 1-worker extracts side by side {workload_capacity:.2f}x (the ceiling "
              f"of the {n}-worker speed-ups above on this machine)")
        print(f"full pipeline (1 worker, every link kept) vs wikiextractor: "
              f"{figures['pipeline_vs_wikiextractor']:.2f}x per CPU-second, "
              f"{figures['pipeline_vs_wikiextractor_wall']:.2f}x wall")
        print(f"extract {n} workers vs 1: multistream {figures[f'multistream_{n}w_speedup']:.2f}x (on the "
              f"x{args.memory_scale} dump {figures[f'multistream_x{args.memory_scale}_{n}w_speedup']:.2f}x), plain "
              f"{figures[f'plain_{n}w_speedup']:.2f}x (wikiextractor --processes {n}: "
              f"{figures[f'wikiextractor_{n}w_speedup']:.2f}x)")
        print(f"peak memory on the x{args.memory_scale} dump over the x1 dump: extract "
              f"{figures['extract_peak_mem_ratio']:.2f}x, wikiextractor "
              f"{figures['wikiextractor_peak_mem_ratio']:.2f}x")
        print(f"pipeline killed halfway, then restarted: the restart takes "
              f"{figures['resume_time_ratio']:.2f}x an uninterrupted run (wikiextractor: 1.00x)")
        print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
