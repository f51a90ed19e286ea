"""python launch/preprocess.py out_dir=OUT 'dumps={en: enwiki.xml.bz2, ja: jawiki.xml.bz2}' \
    wikidata=latest-all.json.gz tokenizer=xlm-roberta-base [stages=[...]] [num_workers=N]"""

import logging
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
sys.path.insert(0, str(CONF.parent))

import hydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from preprocessing.config import register  # noqa: E402
from preprocessing.pipeline import PreprocessError, format_summary, run_pipeline  # noqa: E402
from pretrain.cli import check_overrides  # noqa: E402

register()


@hydra.main(config_path="../conf", config_name="preprocess", version_base=None)
def main(cfg) -> None:
    logging.getLogger("preprocessing").setLevel(logging.INFO)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        print(f"error: missing required setting(s): {', '.join(missing)} (e.g. out_dir=OUT)", file=sys.stderr)
        sys.exit(2)
    cfg = OmegaConf.to_object(cfg)
    try:
        stats = run_pipeline(cfg)
    except PreprocessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(format_summary(stats))
    print(f"outputs in {Path(cfg.out_dir).resolve()} (stats.json has the full counts)")


if __name__ == "__main__":
    check_overrides(CONF, "preprocess", sys.argv[1:])  # a bad override: one line, before any work
    main()
