"""python launch/report.py RUN_DIR [RUN_DIR ...] [--data OUT] [--out DIR] [--cloze results.json]

Writes DIR/report.html (self-contained: plots embedded) and the plots as PNGs beside it.
Give the stage-1 and stage-2 run directories in order to see both stages on one axis."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.report import ReportError, write_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                        help="pretraining run directories (metrics.jsonl, config.yaml), in stage order")
    parser.add_argument("--data", type=Path, help="preprocessing output (default: data.dir of the runs' config)")
    parser.add_argument("--out", type=Path, help="report directory (default: FIRST_RUN_DIR/report or OUT/report)")
    parser.add_argument("--cloze", type=Path, help="cloze evaluation results JSON from launch/evaluate.py")
    args = parser.parse_args(argv)
    if not args.run_dirs and args.data is None:
        parser.error("give at least one RUN_DIR or --data OUT")
    out = args.out or (args.run_dirs[0] if args.run_dirs else args.data) / "report"
    try:
        path = write_report(args.run_dirs, out, data_dir=args.data, cloze=args.cloze)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"report: {path.resolve()} (PNGs beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
