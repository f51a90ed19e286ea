"""python launch/evaluate.py model=DIR facts=FILE [out=cloze_results.json] [languages=en,ja,...] \
    [batch_size=16] [device=cpu|cuda] [predictions=false]

mLAMA-style cloze evaluation of an exported mLUKE (a directory LukeForMaskedLM / MLukeTokenizer load):
prints per-language top-1 accuracy of word and entity prompts and writes them as JSON (docs/cloze.md);
predictions=true adds every fact's predictions to the JSON.
FILE is a fact file (docs/cloze.md); launch/convert_facts.py makes one from the mLAMA or X-FACTR release."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.cli import parse_key_values  # noqa: E402


def main(argv: list[str]) -> int:
    args = parse_key_values(argv, required=("model", "facts"),
                            optional={"out": "cloze_results.json", "languages": "", "batch_size": 16,
                                      "device": "", "predictions": False})
    from transformers import LukeForMaskedLM, MLukeTokenizer

    from pretrain.evaluation.cloze import evaluate, format_table
    from pretrain.evaluation.facts import FactsError, load_facts

    try:
        facts = load_facts(args["facts"])
    except FactsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    languages = [x for x in args["languages"].split(",") if x]
    unknown = sorted(set(languages) - set(facts.languages))
    if unknown:
        print(f"error: {args['facts']} has no templates for {', '.join(unknown)} "
              f"(it has {', '.join(facts.languages)})", file=sys.stderr)
        return 1
    model_dir = Path(args["model"])
    if not (model_dir / "config.json").is_file():
        print(f"error: {model_dir}: no config.json; give a directory written by launch/export.py", file=sys.stderr)
        return 1
    model = LukeForMaskedLM.from_pretrained(str(model_dir))
    tokenizer = MLukeTokenizer.from_pretrained(str(model_dir))
    results = evaluate(model, tokenizer, facts, languages or None, batch_size=args["batch_size"],
                       device=args["device"] or None, predictions=args["predictions"])
    print(format_table(results))
    results = {"model": str(model_dir.resolve()), "facts": str(Path(args["facts"]).resolve()), **results}
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
