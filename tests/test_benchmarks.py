"""Every benchmark runs at a tiny size (`--smoke`) and prints its figure line, so that a change cannot
break one unnoticed. The figures themselves are not checked here: timing belongs to the benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The figures each benchmark's last line must hold.
FIGURES = {
    "gpu_check.py": ("zero1_tokens_per_s", "zero1_data_wait_pct", "zero1_padded_per_real", "model_step_s"),
    "interwiki.py": ("json_lines_per_s", "sql_rows_per_s", "sql_speedup"),
    "model_step.py": ("speedup_vs_hf", "memory_ratio_vs_hf"),
    "preprocess.py": ("pipeline_vs_wikiextractor", "multistream_2w_speedup", "multistream_x4_2w_speedup",
                      "plain_2w_speedup", "extract_capacity_2proc",
                      "extract_peak_mem_ratio", "resume_time_ratio"),
    "train_step.py": ("tiny_tokens_per_s", "tiny_step_s", "tiny_data_wait_pct"),
}
FIGURE = re.compile(r"([A-Za-z0-9_]+)=(-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)")


def test_every_benchmark_is_listed():
    assert sorted(FIGURES) == sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", sorted(FIGURES))
def test_benchmark_runs_and_prints_its_figures(script, tmp_path):
    # (without the process-group variables that in-process trainer tests leave in this worker's environment)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false", TMPDIR=str(tmp_path))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    figures = dict(FIGURE.findall(last))
    assert figures and " ".join(f"{k}={v}" for k, v in figures.items()) == last.strip(), last
    missing = [name for name in FIGURES[script] if name not in figures]
    assert not missing, (missing, last)
