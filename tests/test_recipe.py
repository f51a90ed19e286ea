"""`experiment=mluke_base` / `mluke_large` (and conf/preprocess.yaml) train exactly the recipe of
pretrain/recipe.py, and docs/recipe.md shows that table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pretrain_fixture import ROOT, compose

from pretrain.recipe import ITEMS, SAME, config_items, table


def preprocess_config():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from preprocessing.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return OmegaConf.to_object(hydra_compose(config_name="preprocess", overrides=["out_dir=x"]))


def lookup(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return list(cfg) if isinstance(cfg, (list, tuple)) else cfg


@pytest.mark.parametrize("experiment", ["mluke_base", "mluke_large"])
def test_experiment_resolves_to_the_recipe(experiment):
    configs = {"pretrain": compose([f"experiment={experiment}", "data.dir=x", "run_dir=z"]),
               "preprocess": preprocess_config()}
    checked = []
    for config, key, item in config_items():
        assert lookup(configs[config], key) == item.value("ours", experiment), (config, key)
        checked.append(key)
    assert len(checked) >= 30


def test_deviations_say_why():
    for item in ITEMS:
        assert (item.ours is SAME) == (not item.why), item.key
        if item.ours is not SAME:
            assert item.ours != item.reference, item.key


def test_the_doc_shows_the_table():
    doc = (Path(ROOT) / "docs" / "recipe.md").read_text(encoding="utf-8")
    assert table() in doc
