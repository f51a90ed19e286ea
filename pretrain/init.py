"""Initialize mLUKE from an XLM-RoBERTa masked-LM checkpoint, as the reference implementation does.

studio-ousia/luke (luke/pretraining/train.py + luke/model.py): build the LUKE model with LUKE's
`init_weights` (normal(0, initializer_range), zero biases, unit LayerNorms), then load the XLM-R
state dict with the `roberta.` prefix removed: word/position/token-type embeddings, encoder and the LM
head come from XLM-R; the entity embeddings (table, projection, position and token-type embeddings,
LayerNorm), the entity prediction head and the pooler stay randomly initialized. The entity-aware
query layers start as copies of each layer's query (luke/model.py `LukeEntityAwareAttentionModel`).
The entity table has one row per vocabulary id plus `[MASK2]` (HF's mLUKE conversion appends it and
initializes it from `[MASK]`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LukeConfig, XLMRobertaForMaskedLM

from pretrain.model import MLukeForPretraining

ENTITY_MASK_ID = 2  # [PAD]=0, [UNK]=1, [MASK]=2 (PLAN.md entity vocab contract)


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
    if "[MASK2]" not in vocab:
        raise ValueError(f"{path}: no [MASK2] entry; pass entity_vocab.jsonl or an MLukeTokenizer entity_vocab.json")
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
def init_from_xlmr(xlmr: str | Path | XLMRobertaForMaskedLM, entity_vocab_size: int, entity_emb_size: int = 256,
                   use_entity_aware_attention: bool = False, seed: int = 0) -> MLukeForPretraining:
    """`xlmr`: hub name (e.g. "xlm-roberta-base"), local directory, or a loaded XLMRobertaForMaskedLM."""
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
    table[-1] = table[ENTITY_MASK_ID]  # [MASK2] is the last row
    return model


def init_model_dir(xlmr: str, entity_vocab: str | Path, out_dir: str | Path, tokenizer: str | None = None,
                   entity_emb_size: int = 256, use_entity_aware_attention: bool = False, seed: int = 0,
                   max_entity_length: int = 32, max_mention_length: int = 30) -> Path:
    """`launch/init_model.py`: the initial model, written in the export format (pretrain/export.py).
    `tokenizer` defaults to `xlmr` (a hub name is saved to a temporary directory first)."""
    import tempfile

    from transformers import AutoTokenizer

    from pretrain.export import export_model

    model = init_from_xlmr(xlmr, entity_vocab_size(entity_vocab), entity_emb_size, use_entity_aware_attention, seed)
    tokenizer = tokenizer or xlmr
    with tempfile.TemporaryDirectory() as tmp:
        if not (Path(tokenizer) / "tokenizer.json").is_file():
            AutoTokenizer.from_pretrained(tokenizer).save_pretrained(tmp)
            tokenizer = tmp
        return export_model(model, out_dir, tokenizer_dir=tokenizer, entity_vocab=entity_vocab,
                            max_entity_length=max_entity_length, max_mention_length=max_mention_length)
