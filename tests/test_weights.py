"""What a path is (pretrain/weights.py): the one preference order for model.init_from and launch/export.py,
and the tied keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretrain.checkpoint import COMPLETE, TRAINER_STATE
from pretrain.config import ConfigError
from pretrain.weights import TIED_KEYS, fill_tied, resolve_source


def fake_checkpoint(path: Path, complete: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / TRAINER_STATE).write_text("{}")
    if complete:
        (path / COMPLETE).write_text(json.dumps({"step": 1, "files": {TRAINER_STATE: 2}}))
    return path


def fake_model(path: Path, model_type: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


def test_sources_in_their_preference_order(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    assert resolve_source(str(ckpt)).kind == "checkpoint"

    run = tmp_path / "run"
    fake_checkpoint(run / "checkpoints" / "step_00000002")
    newest = fake_checkpoint(run / "checkpoints" / "step_00000004")
    fake_checkpoint(run / "checkpoints" / "step_00000006", complete=False)  # interrupted: skipped
    source = resolve_source(str(run))
    assert (source.kind, source.path, source.description) == ("checkpoint", str(newest), f"checkpoint {newest}")
    fake_model(run / "export", "luke")  # the run's final model wins over its checkpoints
    assert resolve_source(str(run)) == type(source)("export", str(run / "export"), f"export of run {run}")

    export = fake_model(tmp_path / "export", "luke")
    assert resolve_source(str(export)).description == f"exported model {export}"
    xlmr = fake_model(tmp_path / "xlmr", "xlm-roberta")
    assert resolve_source(str(xlmr)).kind == "xlmr"
    assert resolve_source("xlm-roberta-base") == type(source)("xlmr", "xlm-roberta-base", "XLM-R xlm-roberta-base")


@pytest.mark.parametrize("make, message", [
    (lambda p: fake_checkpoint(p, complete=False), "incomplete checkpoint (no COMPLETE marker"),
    (lambda p: (p / "checkpoints").mkdir(parents=True) or p, "no export/ and no complete checkpoint"),
    (lambda p: fake_model(p, "bert"), "model_type='bert'"),
    (lambda p: p.mkdir() or p, "no config.json"),
    (lambda p: (p.write_text("x"), p)[1], "not a file"),
    (lambda p: p / "missing", "no such directory"),
])
def test_what_a_path_is_not_is_one_line(tmp_path, make, message):
    path = make(tmp_path / "thing")
    with pytest.raises(ConfigError) as error:
        resolve_source(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tied_keys_are_filled_from_either_name():
    tensor = torch.zeros(2)
    for alias, source in TIED_KEYS.items():
        assert fill_tied({alias: tensor}) == {alias: tensor, source: tensor}
        assert fill_tied({source: tensor}) == {alias: tensor, source: tensor}
