"""python launch/export.py checkpoint=PATH out=DIR [data_dir=OUT | tokenizer=DIR entity_vocab=PATH] \
    [entity_aware_attention=true]

checkpoint: a pretraining run directory (its latest checkpoint), a checkpoint directory, or an
exported/initialized model directory. Writes a
directory that transformers loads as is (LukeForMaskedLM, LukeModel, MLukeTokenizer); see pretrain/export.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.export import export_checkpoint, parse_key_values  # noqa: E402

if __name__ == "__main__":
    args = parse_key_values(
        sys.argv[1:], required=("checkpoint", "out"),
        optional={"data_dir": None, "tokenizer": None, "entity_vocab": None, "entity_aware_attention": True},
    )
    out = export_checkpoint(args.pop("checkpoint"), args.pop("out"), **args)
    print(f"wrote {out}")
