"""python launch/convert_facts.py source=mlama root=DIR out=FILE [languages=en,ja,...]

Converts a public release into the cloze evaluation's fact file (docs/cloze.md):
  source=mlama   root = the unpacked mlama1.1 directory (<lang>/templates.jsonl, <lang>/<relation>.jsonl)
  source=xfactr  root = a clone of jzbjyb/X-FACTR
                 (data/TREx_prompts.csv, data/mTRExf/sub/, data/mTRExf_unicode_escape.txt)"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.cli import parse_key_values  # noqa: E402


def main(argv: list[str]) -> int:
    args = parse_key_values(argv, required=("source", "root", "out"), optional={"languages": ""})
    from pretrain.evaluation.facts import FactsError, convert_mlama, convert_xfactr, write_facts

    converters = {"mlama": convert_mlama, "xfactr": convert_xfactr}
    if args["source"] not in converters:
        print(f"error: source must be one of {', '.join(converters)}, got {args['source']!r}", file=sys.stderr)
        return 2
    languages = [x for x in args["languages"].split(",") if x] or None
    try:
        facts, stats = converters[args["source"]](args["root"], languages)
    except FactsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_facts(args["out"], facts)
    print(json.dumps(stats, ensure_ascii=False))
    print(f"wrote {Path(args['out']).resolve()} ({', '.join(facts.languages)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
