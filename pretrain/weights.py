"""Model weights: what a path is, reading weights from each kind of source, and initialization from XLM-R.

`resolve_source(text)` decides what `model.init_from=` or `launch/export.py checkpoint=` names, in this
order (the first that applies wins):

1. a pretraining checkpoint: a directory with trainer_state.json (RUN_DIR/checkpoints/step_N/);
2. a pretraining run directory (checkpoints/ or export/ in it): its export/ when there is one (the
   trainer writes it from the final checkpoint and removes it when the run trains on), else its latest
   complete checkpoint;
3. an exported model: config.json with model_type "luke" (ours, or the published mLUKE layout);
4. XLM-R: a directory whose config.json has model_type "xlm-roberta", or, when no such path exists, a
   hub name such as xlm-roberta-base.

`load_model(source)` reads 1-3 as an `MLukeForPretraining` in fp32; `init_from_xlmr` builds mLUKE from 4
as the reference implementation does. `TIED_KEYS` is the one list of state-dict keys that alias others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LukeConfig

from preprocessing.contract import MASK2, MASK_ID

from . import checkpoint
from .config import ConfigError
from .model import MLukeForPretraining

# alias -> source: keys of one tensor. transformers' LukeForMaskedLM ties the first two (and fills them in
# when loading); ours also ties the word decoder to the word embeddings, as the original LUKE does.
TIED_KEYS = {
    "entity_predictions.decoder.weight": "luke.entity_embeddings.entity_embeddings.weight",
    "lm_head.bias": "lm_head.decoder.bias",
    "lm_head.decoder.weight": "luke.embeddings.word_embeddings.weight",
}
HF_TIED_KEYS = ("entity_predictions.decoder.weight", "lm_head.bias")
EXPORT = "export"  # RUN_DIR/export: the run's final model in the exported form


# ---------------------------------------------------------------- what a path is


@dataclass(frozen=True)
class Source:
    kind: str  # checkpoint | export | xlmr
    path: str  # the checkpoint / export directory, or the XLM-R directory or hub name
    description: str  # for logs: where the weights come from


def _model_type(path: Path) -> str | None:
    f = path / "config.json"
    return json.loads(f.read_text()).get("model_type") if f.is_file() else None


def is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / EXPORT / "config.json").is_file()


def resolve_source(text: str) -> Source:
    """See the module docstring; a ConfigError says in one line what the path is not."""
    path = Path(text)
    if (path / checkpoint.TRAINER_STATE).is_file():
        problem = checkpoint.checkpoint_problem(path)
        if problem:
            raise ConfigError(f"{path}: incomplete checkpoint ({problem})")
        return Source("checkpoint", str(path), f"checkpoint {path}")
    if path.is_dir() and is_run_dir(path):
        if _model_type(path / EXPORT) == "luke":
            return Source("export", str(path / EXPORT), f"export of run {path}")
        ckpt = checkpoint.latest_complete_checkpoint(path)
        if ckpt is None:
            raise ConfigError(f"{path}: a run directory with no export/ and no complete checkpoint")
        return Source("checkpoint", str(ckpt), f"checkpoint {ckpt}")
    if path.is_dir():
        kind = _model_type(path)
        if kind == "luke":
            return Source("export", str(path), f"exported model {path}")
        if kind == "xlm-roberta":
            return Source("xlmr", str(path), f"XLM-R {path}")
        if kind is None:
            raise ConfigError(f"{path}: no config.json; expected an XLM-R directory, an exported mLUKE, a "
                              "pretraining run directory or a checkpoint")
        raise ConfigError(f"{path}: config.json has model_type={kind!r}; expected an XLM-R directory, an "
                          "exported mLUKE, a pretraining run directory or a checkpoint")
    if path.exists():
        raise ConfigError(f"{path}: expected a directory (XLM-R, export, run or checkpoint), not a file")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ConfigError(f"{path}: no such directory")
    return Source("xlmr", text, f"XLM-R {text}")  # a hub name


# ---------------------------------------------------------------- reading weights


def fill_tied(state: dict) -> dict:
    """Both names of every tied pair, whichever one `state` has (DeepSpeed saves one per tensor)."""
    for alias, source in TIED_KEYS.items():
        if source in state:
            state.setdefault(alias, state[source])
        elif alias in state:
            state[source] = state[alias]
    return state


def load_weights(model: MLukeForPretraining, state: dict, what: str) -> MLukeForPretraining:
    """Load a full state dict (tied keys under either name) into `model`; ConfigError if it does not fit."""
    missing, unexpected = model.load_state_dict(fill_tied(dict(state)), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{what}: weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model


def consolidated_state_dict(ckpt: Path) -> dict:
    """fp32 weights of a checkpoint, whatever the ZeRO stage and number of ranks that wrote it."""
    ds_dir = Path(ckpt) / checkpoint.DS_TAG
    # The module copy (not written under ZeRO-3) holds every parameter in the training dtype,
    # frozen ones included, which ZeRO-1 keeps nowhere else ...
    state = {}
    if (ds_dir / "mp_rank_00_model_states.pt").is_file():
        states = torch.load(ds_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        state = {k: v.float() for k, v in states["module"].items() if v.numel()}
    # Under bf16 DeepSpeed names the optimizer shards bf16_zero_pp_rank_*: both forms must match, else a
    # bf16 run would export its bf16-rounded module copy (ZeRO-1/2) or nothing at all (ZeRO-3).
    if any(ds_dir.glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # ... and the optimizer's fp32 master copy is exact for the trained ones (ZeRO-2/3 add the
        # frozen ones, in the training dtype).
        fp32 = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=checkpoint.DS_TAG)
        state.update({k: v.float() for k, v in fp32.items()})
    return state


def checkpoint_config(ckpt: Path) -> LukeConfig:
    return LukeConfig.from_json_file(str(Path(ckpt) / checkpoint.MODEL_CONFIG))


def load_exported(path: str | Path, **config_overrides) -> MLukeForPretraining:
    """An exported directory (ours, or the published mLUKE layout) as MLukeForPretraining, fp32.

    The word vocabulary is cut back to the size of the directory's tokenizer.json (XLM-R's), dropping
    the <ent>/<ent2> rows the export appended, so the model matches the data it trains on.
    config_overrides, e.g. `use_entity_aware_attention=False` (allowed only when the entity-aware
    queries equal `query`, i.e. were never trained apart) or `vocab_size=N` (keep the first N word rows).
    """
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    path = Path(path)
    config = LukeConfig.from_pretrained(str(path))
    state = fill_tied(load_file(str(path / "model.safetensors")))
    if not torch.equal(state["lm_head.decoder.weight"], state["luke.embeddings.word_embeddings.weight"]):
        raise ConfigError(f"{path}: lm_head.decoder.weight differs from the word embeddings; "
                         "this model ties them, so it cannot load these weights unchanged")
    if "vocab_size" not in config_overrides and (path / "tokenizer.json").is_file():
        # back to the XLM-R vocabulary the data uses: drops the <ent>/<ent2> rows the export added
        config_overrides["vocab_size"] = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size()
    for key, value in config_overrides.items():
        setattr(config, key, value)
    vocab_size = config.vocab_size
    for key in ("luke.embeddings.word_embeddings.weight", "lm_head.decoder.weight", "lm_head.decoder.bias",
                "lm_head.bias"):
        state[key] = state[key][:vocab_size]
    if not config.use_entity_aware_attention:
        for key in [k for k in state if "_query." in k]:
            if not torch.equal(state[key], state[key.replace("w2e_", "").replace("e2w_", "").replace("e2e_", "")]):
                raise ConfigError(f"{path}: {key} differs from the query weights; keep use_entity_aware_attention")
            del state[key]
    model = MLukeForPretraining(config)
    model.load_state_dict(state, strict=True)
    return model


def load_model(source: Source | str, **config_overrides) -> MLukeForPretraining:
    """The fp32 model of a checkpoint, run directory or export (XLM-R needs `init_from_xlmr`).
    `config_overrides` apply to exports (see `load_exported`)."""
    source = resolve_source(source) if isinstance(source, str) else source
    if source.kind == "export":
        return load_exported(source.path, **config_overrides)
    if source.kind == "checkpoint":
        model = MLukeForPretraining(checkpoint_config(source.path))
        return load_weights(model, consolidated_state_dict(Path(source.path)), source.path)
    raise ConfigError(f"{source.path}: an XLM-R model, not an mLUKE one; initialize it with init_from_xlmr")


# ---------------------------------------------------------------- initialization from XLM-R
# studio-ousia/luke (luke/pretraining/train.py + luke/model.py): build the LUKE model with LUKE's
# `init_weights` (normal(0, initializer_range), zero biases, unit LayerNorms), then load the XLM-R
# state dict with the `roberta.` prefix removed: word/position/token-type embeddings, encoder and the LM
# head come from XLM-R; the entity embeddings (table, projection, position and token-type embeddings,
# LayerNorm), the entity prediction head and the pooler stay randomly initialized. The entity-aware
# query layers start as copies of each layer's query (luke/model.py `LukeEntityAwareAttentionModel`).
# The entity table has one row per vocabulary id plus `[MASK2]` (HF's mLUKE conversion appends it and
# initializes it from `[MASK]`).


def entity_vocab_size(path: str | Path) -> int:
    """Rows of the entity table for a vocabulary file, [MASK2] included.

    `entity_vocab.jsonl` (one line per id, dense from 0): number of ids + 1 for [MASK2].
    `entity_vocab.json` (MLukeTokenizer form, already holding [MASK2]): largest id + 1.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            ids = [json.loads(line)["id"] for line in f if line.strip()]
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"{path}: entity ids must be dense from 0")
        return len(ids) + 1
    vocab = json.loads(path.read_text(encoding="utf-8"))
    if MASK2 not in vocab:
        raise ValueError(f"{path}: no {MASK2} entry; pass entity_vocab.jsonl or an MLukeTokenizer entity_vocab.json")
    return max(vocab.values()) + 1


def config_from_xlmr(xlmr_config, entity_vocab_size: int, entity_emb_size: int = 256,
                     use_entity_aware_attention: bool = False) -> LukeConfig:
    """A LukeConfig with XLM-R's sizes and the entity settings (mLUKE pretrains without entity-aware attention)."""
    keys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id"]
    return LukeConfig(
        **{k: getattr(xlmr_config, k) for k in keys},
        entity_vocab_size=entity_vocab_size,
        entity_emb_size=entity_emb_size,
        use_entity_aware_attention=use_entity_aware_attention,
    )


@torch.no_grad()
def init_from_xlmr(xlmr, entity_vocab_size: int, entity_emb_size: int = 256,
                   use_entity_aware_attention: bool = False, seed: int = 0) -> MLukeForPretraining:
    """`xlmr`: hub name (e.g. "xlm-roberta-base"), local directory, or a loaded XLMRobertaForMaskedLM."""
    from transformers import XLMRobertaForMaskedLM

    if not isinstance(xlmr, XLMRobertaForMaskedLM):
        xlmr = XLMRobertaForMaskedLM.from_pretrained(str(xlmr), dtype=torch.float32)
    config = config_from_xlmr(xlmr.config, entity_vocab_size, entity_emb_size, use_entity_aware_attention)
    torch.manual_seed(seed)
    model = MLukeForPretraining(config)

    state = {k.replace("roberta.", "luke.", 1): v for k, v in xlmr.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"XLM-R weights without a place in mLUKE: {unexpected}")
    new = ("luke.entity_embeddings.", "entity_predictions.", "luke.pooler.", "_query.")
    not_loaded = [k for k in missing if not any(part in k for part in new)]
    if not_loaded:
        raise ValueError(f"mLUKE weights missing from the XLM-R checkpoint: {not_loaded}")

    for layer in model.luke.encoder.layer:
        attention = layer.attention.self
        if attention.entity_aware:
            for query in (attention.w2e_query, attention.e2w_query, attention.e2e_query):
                query.load_state_dict(attention.query.state_dict())
    table = model.luke.entity_embeddings.entity_embeddings.weight
    table[-1] = table[MASK_ID]  # [MASK2] is the last row
    return model
