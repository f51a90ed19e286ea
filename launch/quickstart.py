"""From a fresh clone to a trained, exported, evaluated mLUKE on the bundled sample.

    python launch/quickstart.py [out=quickstart_out] [xlmr=standin|xlm-roberta-base|DIR]
                                [steps=300] [processes=2] [overwrite=false]

Steps (each timed; a rerun reuses the steps whose output exists):
  1. stand-in  — a tiny XLM-R + sentencepiece tokenizer trained on the sample (replaces
                 xlm-roberta-base, which needs the model hub; `xlmr=xlm-roberta-base` uses the real one)
  2. preprocess — the sample dumps (7 languages) + Wikidata excerpt → entity vocab + datasets
  3. stage 1    — `deepspeed` on `processes` CPU processes: entity side only, from the stand-in
  4. stage 2    — all weights, from stage 1
  5. export     — Hugging Face format, loaded back with LukeForMaskedLM / MLukeTokenizer
  6. cloze      — mLAMA-style facts, word and entity prompts
  7. report     — HTML page with data statistics and training curves
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pretrain.cli import parse_key_values  # noqa: E402

SAMPLE = REPO / "sample"
DEFAULTS = {"out": "quickstart_out", "xlmr": "standin", "steps": 300, "processes": 2,
            "overwrite": False}


START = time.perf_counter()
TOTAL_STEPS = 7


def step(number: int, title: str, done: Path, action) -> None:
    """Run step `number` unless its output `done` exists; print how long it took."""
    head = f"[{number}/{TOTAL_STEPS}] {title}"
    if done.exists():
        print(f"{head}: done already ({done}), reused", flush=True)
        return
    print(f"{head} ...", flush=True)
    t0 = time.perf_counter()
    action()
    print(f"{head}: finished in {time.perf_counter() - t0:.0f} s "
          f"(total {time.perf_counter() - START:.0f} s)", flush=True)


def run(cmd: list[str], **env: str) -> None:
    print("  $ " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **env))
    if result.returncode:
        sys.exit(f"error: step failed (exit {result.returncode}): {' '.join(cmd)}")


def main(argv: list[str]) -> None:
    args = parse_key_values(argv, required=(), optional=DEFAULTS)
    from pretrain.distributed import free_port

    out = Path(args["out"]).resolve()
    if args["overwrite"]:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    standin = args["xlmr"] == "standin"
    xlmr = out / "xlmr-standin" if standin else args["xlmr"]
    data, runs = out / "data", out / "runs"
    stage1, stage2 = runs / "stage1-entity", runs / "stage2-full"
    export, cloze, report = out / "export", out / "cloze_results.json", out / "report"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"

    def build_standin() -> None:
        from pretrain.standin import build_standin_tokenizer, build_tiny_xlmr, dump_texts

        tmp = out / ".tmp-standin"
        shutil.rmtree(tmp, ignore_errors=True)
        texts = dump_texts(sorted((SAMPLE / "dumps").glob("*.xml")))
        tokenizer = build_standin_tokenizer(tmp / "tokenizer", texts, vocab_size=1000)
        # Small enough for a laptop CPU, big enough to pick up the sample's facts.
        build_tiny_xlmr(tmp / "model", tokenizer, hidden_size=128, num_layers=2, num_heads=4,
                        intermediate_size=512)
        (tmp / "model").rename(xlmr)
        shutil.rmtree(tmp)

    if standin:
        print("NOTE: no model hub here, so a tiny XLM-R trained on the sample stands in for "
              "xlm-roberta-base.\n      Run with xlmr=xlm-roberta-base (or a local XLM-R "
              "directory) to start from the real one.")
        step(1, "stand-in XLM-R and tokenizer", xlmr, build_standin)
    else:
        print(f"[1/7] starting from {xlmr}")

    dumps = ", ".join(f"{p.name.split('wiki-')[0]}: '{p}'"
                      for p in sorted((SAMPLE / "dumps").glob("*wiki-sample.xml")))
    step(2, "preprocess the sample", data / "stats.json", lambda: run([
        py, "launch/preprocess.py", f"out_dir={data}", f"dumps={{{dumps}}}",
        f"wikidata={SAMPLE / 'wikidata-sample.json'}", f"tokenizer={xlmr}",
        "entity_vocab.min_num_languages=2", "dataset.max_seq_length=128"]))

    def pretrain(stage: str, init_from: Path | str, run_dir: Path) -> None:
        run(["deepspeed", "--num_gpus", str(args["processes"]), "--master_port", str(free_port()),
             "launch/pretrain.py", "experiment=quickstart", f"stage={stage}",
             f"data.dir={data}", f"model.init_from={init_from}", f"run_dir={run_dir}",
             f"trainer.max_steps={args['steps']}", "resume=auto"],
            PATH=f"{Path(py).parent}{os.pathsep}{os.environ['PATH']}")

    step(3, "pretraining stage 1 (entity side)", stage1 / "export" / "config.json",
         lambda: pretrain("entity", xlmr, stage1))
    step(4, "pretraining stage 2 (all weights)", stage2 / "export" / "config.json",
         lambda: pretrain("full", stage1, stage2))

    def export_and_load() -> None:
        run([py, "launch/export.py", f"checkpoint={stage2}", f"out={export}"])
        from transformers import LukeForMaskedLM, MLukeTokenizer

        model = LukeForMaskedLM.from_pretrained(export)
        tokenizer = MLukeTokenizer.from_pretrained(export)
        text = "Berlin is the capital of Germany."
        enc = tokenizer(text, entities=["en:Berlin", "en:Germany"],
                        entity_spans=[(0, 6), (25, 32)], return_tensors="pt")
        print(f"  loaded with transformers: {type(model).__name__} "
              f"({sum(p.numel() for p in model.parameters()):,} parameters), "
              f"{type(tokenizer).__name__}; entity ids of en:Berlin, en:Germany = "
              f"{enc['entity_ids'][0].tolist()}")

    step(5, "export to Hugging Face format", export / "model.safetensors", export_and_load)
    step(6, "cloze evaluation", cloze, lambda: run([
        py, "launch/evaluate.py", f"model={export}", f"facts={SAMPLE / 'facts-sample.jsonl'}",
        f"out={cloze}"]))
    step(7, "report", report / "report.html", lambda: run([
        py, "launch/report.py", f"runs={stage1},{stage2}", f"data={data}", f"cloze={cloze}",
        f"out={report}"]))

    wandb_runs = sorted(p for r in (stage1, stage2) for p in r.rglob("offline-run-*") if p.is_dir())
    print("\nDone. Everything is under", out)
    print(f"  preprocessing output : {data}  (stats.json, entity_vocab.jsonl, dataset/)")
    print(f"  pretraining runs     : {stage1}\n                         {stage2}"
          "  (config.yaml, metrics.jsonl, checkpoints/)")
    if wandb_runs:
        print("  W&B offline runs     : " + "\n                         ".join(map(str, wandb_runs)))
        print("                         upload with: wandb sync " + str(wandb_runs[-1]))
    print(f"  exported model       : {export}  (LukeForMaskedLM / MLukeTokenizer.from_pretrained)")
    print(f"  cloze results        : {cloze}")
    print(f"  report               : {report / 'report.html'}")


if __name__ == "__main__":
    main(sys.argv[1:])
