"""python launch/init_model.py xlmr=NAME_OR_DIR entity_vocab=PATH out=DIR [tokenizer=DIR] \
    [entity_emb_size=256] [use_entity_aware_attention=false] [seed=0] [max_entity_length=32] [max_mention_length=30]

Writes mLUKE initialized from XLM-RoBERTa (pretrain/weights.py) in the export format, loadable with
transformers' LukeForMaskedLM / MLukeTokenizer. entity_vocab: entity_vocab.jsonl or entity_vocab.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.cli import parse_key_values  # noqa: E402


def main(argv: list[str]) -> int:
    args = parse_key_values(
        argv, required=("xlmr", "entity_vocab", "out"),
        optional={"tokenizer": None, "entity_emb_size": 256, "use_entity_aware_attention": False, "seed": 0,
                  "max_entity_length": 32, "max_mention_length": 30},
    )
    from pretrain.export import init_model_dir

    try:
        out = init_model_dir(args.pop("xlmr"), args.pop("entity_vocab"), args.pop("out"), **args)
    except (OSError, ValueError) as e:
        print(f"error: {(str(e).strip().splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
