"""python launch/init_model.py xlmr=NAME_OR_DIR entity_vocab=PATH out=DIR [tokenizer=DIR] \
    [entity_emb_size=256] [use_entity_aware_attention=false] [seed=0] [max_entity_length=32] [max_mention_length=30]

Writes mLUKE initialized from XLM-RoBERTa (pretrain/init.py) in the export format, loadable with
transformers' LukeForMaskedLM / MLukeTokenizer. entity_vocab: entity_vocab.jsonl or entity_vocab.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.export import parse_key_values  # noqa: E402
from pretrain.init import init_model_dir  # noqa: E402

if __name__ == "__main__":
    args = parse_key_values(
        sys.argv[1:], required=("xlmr", "entity_vocab", "out"),
        optional={"tokenizer": None, "entity_emb_size": 256, "use_entity_aware_attention": False, "seed": 0,
                  "max_entity_length": 32, "max_mention_length": 30},
    )
    out = init_model_dir(args.pop("xlmr"), args.pop("entity_vocab"), args.pop("out"), **args)
    print(f"wrote {out}")
