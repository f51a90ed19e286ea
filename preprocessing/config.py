"""Typed configuration of the preprocessing pipeline (registered with Hydra as `preprocess_schema`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from .contract import DatasetLimits

# The 24 Wikipedias of mLUKE (Ri et al., 2022): the default recipe, not a limit.
LANGUAGES = (
    "ar bn de el en es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh".split()
)
# Any Wikipedia works. Its code is the xx of xx.wikipedia.org: an ISO 639 code, possibly with
# subtags (zh-yue, be-tarask, zh-min-nan, be-x-old), or "simple". New Wikipedias open every
# year, so the form is checked here, not membership in a list.
WIKIPEDIA_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*|simple")
STAGES = ("extract", "interwiki", "entity_vocab", "dataset")


@dataclass
class EntityVocabConfig:
    size: int = 1_200_000
    # mLUKE keeps entities that appear in at least 3 languages.
    min_num_languages: int = 3
    # Each language's entities are first cut to its most-linked ones (mLUKE: 1,000,000 entries per
    # language, the 3 special entities included), before languages are merged by QID.
    per_language_size: int = 1_000_000


@dataclass
class PreprocessConfig:
    out_dir: str = MISSING
    # {lang: path to <lang>wiki-*-pages-articles*.xml[.bz2|.gz]}. Untyped so that
    # `'dumps={en: a.xml.bz2}'` works without a `+` (a typed Dict would reject new keys).
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
