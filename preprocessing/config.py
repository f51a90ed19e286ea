"""Typed configuration of the preprocessing pipeline (registered with Hydra as `preprocess_schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from .contract import DatasetLimits

# The 24 Wikipedias of mLUKE (Ri et al., 2022).
LANGUAGES = (
    "ar bn de el en es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh".split()
)
STAGES = ("extract", "interwiki", "entity_vocab", "dataset")


@dataclass
class EntityVocabConfig:
    size: int = 1_200_000
    # mLUKE keeps entities that appear in at least 3 languages.
    min_num_languages: int = 3


@dataclass
class PreprocessConfig:
    out_dir: str = MISSING
    # {lang: path to <lang>wiki-*-pages-articles*.xml[.bz2|.gz]}. Untyped so that
    # `'dumps={en: a.xml.bz2}'` works without a `+` (see ENVIRONMENT.md).
    dumps: Any = None
    # {lang: path to <lang>wiki-*-multistream-index.txt.bz2}; by default the index beside a
    # multistream dump is used when there is one.
    indexes: Any = None
    wikidata: Optional[str] = None
    tokenizer: Optional[str] = None
    stages: List[str] = field(default_factory=lambda: list(STAGES))
    num_workers: int = 0  # 0 = all cores
    overwrite: bool = False
    # Use the pages read from a truncated dump instead of stopping.
    allow_truncated: bool = False
    progress: bool = True
    entity_vocab: EntityVocabConfig = field(default_factory=EntityVocabConfig)
    dataset: DatasetLimits = field(default_factory=DatasetLimits)


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="preprocess_schema", node=PreprocessConfig)
