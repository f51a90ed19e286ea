"""Shared, session-scoped fixtures: the bundled sample dumps, a stand-in tokenizer and XLM-R,
and one full preprocessing run on the sample. Built once per test session (also under
pytest-xdist, where workers share them through a file lock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).resolve().parents[1] / "sample"


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id):
    """A directory shared by all xdist workers of this session."""
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent
    path = base / "shared"
    path.mkdir(exist_ok=True)
    return path


def _build_once(path: Path, build):
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            build(path)
    return path


@pytest.fixture(scope="session")
def fixture_dumps() -> dict[str, Path]:
    dumps = {}
    for path in sorted((FIXTURES / "dumps").glob("*wiki-sample.xml")):
        dumps[path.name.split("wiki-")[0]] = path
    return dumps


@pytest.fixture(scope="session")
def wikidata_sample() -> Path:
    return FIXTURES / "wikidata-sample.json"


@pytest.fixture(scope="session")
def tiny_tokenizer(shared_dir, fixture_dumps) -> Path:
    from pretrain.standin import build_standin_tokenizer, dump_texts

    return _build_once(
        shared_dir / "tokenizer",
        lambda p: build_standin_tokenizer(p, dump_texts(fixture_dumps.values()), vocab_size=1000),
    )


@pytest.fixture(scope="session")
def tiny_xlmr(shared_dir, tiny_tokenizer) -> Path:
    from pretrain.standin import build_tiny_xlmr

    return _build_once(shared_dir / "xlmr", lambda p: build_tiny_xlmr(p, tiny_tokenizer))


@pytest.fixture(scope="session")
def preprocessed(shared_dir, fixture_dumps, wikidata_sample, tiny_tokenizer) -> Path:
    """OUT of a full preprocessing run on the sample (entities kept from one language up)."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run_pipeline

    def build(path: Path) -> None:
        cfg = PreprocessConfig(
            out_dir=str(path) + ".building", dumps={k: str(v) for k, v in fixture_dumps.items()},
            wikidata=str(wikidata_sample), tokenizer=str(tiny_tokenizer), num_workers=1,
            progress=False,
        )
        cfg.entity_vocab.min_num_languages = 1
        cfg.dataset.max_seq_length = 128
        run_pipeline(cfg)
        Path(cfg.out_dir).rename(path)

    return _build_once(shared_dir / "preprocessed", build)
