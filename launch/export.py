"""python launch/export.py checkpoint=PATH out=DIR [data_dir=OUT | tokenizer=DIR entity_vocab=PATH] \
    [entity_aware_attention=false]

checkpoint: a pretraining run directory, a checkpoint directory, or an exported/initialized model directory
(pretrain/weights.py says how each is recognised). Writes a directory that transformers loads as is
(LukeForMaskedLM, LukeModel, MLukeTokenizer); see pretrain/export.py. entity_aware_attention=true switches
LUKE's entity-aware attention on for fine-tuning (its queries start as copies of the plain ones)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.cli import parse_key_values  # noqa: E402


def main(argv: list[str]) -> int:
    args = parse_key_values(argv, required=("checkpoint", "out"),
                            optional={"data_dir": None, "tokenizer": None, "entity_vocab": None,
                                      "entity_aware_attention": False})
    from pretrain.config import ConfigError
    from pretrain.export import export_checkpoint

    try:
        out = export_checkpoint(args.pop("checkpoint"), args.pop("out"), **args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
