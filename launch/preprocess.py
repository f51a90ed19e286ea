"""python launch/preprocess.py out_dir=OUT 'dumps={en: enwiki.xml.bz2, ja: jawiki.xml.bz2}' \
    wikidata=latest-all.json.gz tokenizer=xlm-roberta-base [stages=[...]] [num_workers=N]"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from preprocessing.config import register  # noqa: E402
from preprocessing.pipeline import PreprocessError, format_summary, run_pipeline  # noqa: E402

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
    main()
