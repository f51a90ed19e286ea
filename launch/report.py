"""python launch/report.py runs=RUN_DIR[,RUN_DIR...] [data=OUT] [out=DIR] [cloze=cloze_results.json]

Writes DIR/report.html (self-contained: plots embedded) and the plots as PNGs beside it.
Give the stage-1 and stage-2 run directories in order to see both stages on one axis. data defaults
to data.dir of the runs' config.yaml; out to FIRST_RUN_DIR/report (or OUT/report without runs)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.cli import parse_key_values  # noqa: E402


def main(argv: list[str]) -> int:
    args = parse_key_values(argv, required=(), optional={"runs": None, "data": None, "out": None, "cloze": None})
    runs = [Path(p) for p in (args["runs"] or "").split(",") if p]
    if not runs and args["data"] is None:
        raise SystemExit("error: give runs=RUN_DIR[,RUN_DIR...] or data=OUT")
    from pretrain.evaluation.report import ReportError, write_report

    out = Path(args["out"]) if args["out"] else (runs[0] if runs else Path(args["data"])) / "report"
    try:
        path = write_report(runs, out, data_dir=args["data"], cloze=args["cloze"])
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"report: {path.resolve()} (PNGs beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
