"""Export to a directory that transformers loads with no code of ours (pretrain/weights.py reads it back).

    export_model(model_or_state_dict, out_dir, *, config=None, data_dir=None, tokenizer_dir=None,
                 entity_vocab=None, max_entity_length=32, max_mention_length=None,
                 entity_aware_attention=False) -> Path

- `model_or_state_dict`: an `MLukeForPretraining` (its config is used) or a state dict with our / HF
  `LukeForMaskedLM` key names (then pass `config`, a LukeConfig). Any dtype/device; written as fp32.
- Where the tokenizer and entity vocabulary come from: `data_dir` = a preprocessing OUT directory
  (uses OUT/tokenizer/, OUT/entity_vocab.json, and max_mention_length from OUT/dataset/metadata.json),
  or `tokenizer_dir` (an XLM-R tokenizer directory holding tokenizer.json) and `entity_vocab`
  (entity_vocab.json in MLukeTokenizer form, or entity_vocab.jsonl) explicitly.
- The config says `use_entity_aware_attention: false`, as the published studio-ousia/mluke-base and
  -large do (mLUKE pretrains with plain attention), unless the model was trained with it.
  `entity_aware_attention=True` switches it on for fine-tuning experiments: the w2e/e2w/e2e queries
  start as copies of `query`, which computes the same function (what HF's mLUKE conversion writes).
- The tokenizer config says `max_entity_length: 32` as published (the entities of one fine-tuning input;
  pretraining examples hold up to the data's `max_entity_length`, 128), `max_mention_length` the data's.

The directory holds config.json (LukeConfig), model.safetensors, and the MLukeTokenizer files:
tokenizer.json taken from the XLM-R tokenizer (built from a bare sentencepiece model, MLukeTokenizer
gives raw sentencepiece ids instead of XLM-R's fairseq-offset ones),
sentencepiece.bpe.model when the source has it, entity_vocab.json ("en:London" -> id) and
tokenizer_config.json. It is written atomically and checked before it is put in place: the
tokenizer must give the source tokenizer's word ids on sample sentences.

As HF's mLUKE conversion does, the export also
- appends two word rows for the `<ent>`/`<ent2>` marker tokens MLukeTokenizer adds (initialized from
  "@" and "#"), so `vocab_size` = XLM-R's + 2 and entity-marker fine-tuning works;
- sets the `[MASK2]` entity row and prediction bias to `[MASK]`'s ([MASK2] never occurs in pretraining);
- writes `lm_head.decoder.weight` (HF does not tie it to the word embeddings; we do).

Known upstream deviation (transformers 5.x): MLukeTokenizer builds its Unigram model with unk_id=0,
so a character outside the sentencepiece vocabulary becomes id 0 (<s>) instead of XLM-R's <unk>=3.
All in-vocabulary text encodes identically.

`export_checkpoint` exports whatever pretrain/weights.py resolves (a run, a checkpoint, an export);
`init_model_dir` writes mLUKE initialized from XLM-R in this form (`launch/init_model.py`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import LukeConfig, MLukeTokenizer

from preprocessing.contract import MASK, MASK2, PAD, UNK, DataDir, DatasetMetadata
from preprocessing.entity_vocab import hf_entity_vocab
from preprocessing.fsutil import atomic_dir

from .checkpoint import read_trainer_state
from .config import ConfigError
from .weights import HF_TIED_KEYS, entity_vocab_size, fill_tied, init_from_xlmr, load_model, resolve_source

ENTITY_MARKERS = (("<ent>", "@"), ("<ent2>", "#"))  # token added by MLukeTokenizer, word it starts from
SAMPLE_TEXTS = [
    "Berlin is the capital and largest city of Germany.",
    "東京は日本の首都であり、ロンドンはイギリスの首都である。",
    "La Tour Eiffel est située à Paris, en France.",
    "Москва — столица России. القاهرة هي عاصمة مصر. दिल्ली भारत की राजधानी है।",
]


def _resolve_sources(data_dir, tokenizer_dir, entity_vocab, max_mention_length):
    if data_dir is not None:
        data = DataDir(data_dir)
        tokenizer_dir = tokenizer_dir or data.tokenizer
        if entity_vocab is None:
            entity_vocab = data.hf_entity_vocab if data.hf_entity_vocab.is_file() else data.entity_vocab
        if data.metadata.is_file():
            max_mention_length = max_mention_length or DatasetMetadata.read(data.root).limits.max_mention_length
    if tokenizer_dir is None or entity_vocab is None:
        raise ValueError("export needs the tokenizer and entity vocabulary: data_dir (preprocessing output), "
                         "or tokenizer_dir and entity_vocab (launch/export.py: data_dir=OUT or tokenizer=DIR entity_vocab=PATH)")
    entity_vocab = Path(entity_vocab)
    if not entity_vocab.is_file():
        raise FileNotFoundError(f"{entity_vocab}: entity vocabulary not found")
    if entity_vocab.suffix == ".jsonl":
        vocab = hf_entity_vocab(entity_vocab)
    else:
        vocab = json.loads(entity_vocab.read_text(encoding="utf-8"))
    return Path(tokenizer_dir), vocab, max_mention_length or 30


@torch.no_grad()
def export_model(model_or_state_dict, out_dir: str | Path, *, config: LukeConfig | None = None,
                 data_dir: str | Path | None = None, tokenizer_dir: str | Path | None = None,
                 entity_vocab: str | Path | None = None, max_entity_length: int = 32,
                 max_mention_length: int | None = None, entity_aware_attention: bool = False) -> Path:
    """Write an HF-loadable mLUKE directory (see the module docstring). Returns out_dir."""
    if isinstance(model_or_state_dict, torch.nn.Module):
        config = config or model_or_state_dict.config
        state = model_or_state_dict.state_dict()
    else:
        state = dict(model_or_state_dict)
        if config is None:
            raise ValueError("export_model: pass config= with a state dict")
    tokenizer_dir, vocab, max_mention_length = _resolve_sources(data_dir, tokenizer_dir, entity_vocab,
                                                                max_mention_length)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer.json (save the XLM-R tokenizer with save_pretrained)")
    # The `tokenizers` backend of the XLM-R tokenizer used in preprocessing: the word ids to reproduce.
    source_tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))

    state = fill_tied({k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()})
    state["lm_head.decoder.weight"] = state["luke.embeddings.word_embeddings.weight"].clone()  # HF does not tie it
    config = LukeConfig.from_dict(config.to_dict())
    if source_tokenizer.get_vocab_size() != config.vocab_size:
        raise ValueError(f"{tokenizer_dir}: tokenizer has {source_tokenizer.get_vocab_size()} words, "
                         f"model {config.vocab_size}")
    if max(vocab.values()) + 1 != config.entity_vocab_size:
        raise ValueError(f"entity vocabulary has {max(vocab.values()) + 1} ids with [MASK2], "
                         f"model {config.entity_vocab_size} entity rows")

    # [MASK2] (never seen in pretraining) starts as [MASK]: its embedding and its prediction bias.
    for key in ("luke.entity_embeddings.entity_embeddings.weight", "entity_predictions.bias"):
        state[key][vocab[MASK2]] = state[key][vocab[MASK]]
    # Marker tokens <ent>, <ent2>: new word rows (embedding, tied decoder, bias) from "@" and "#".
    unk = source_tokenizer.token_to_id("<unk>")
    sources = [source_tokenizer.token_to_id(src) or unk for _, src in ENTITY_MARKERS]
    for key in ("luke.embeddings.word_embeddings.weight", "lm_head.decoder.weight", "lm_head.decoder.bias"):
        state[key] = torch.cat([state[key], state[key][sources]])
    config.vocab_size += len(ENTITY_MARKERS)
    if entity_aware_attention and not config.use_entity_aware_attention:
        for i in range(config.num_hidden_layers):
            prefix = f"luke.encoder.layer.{i}.attention.self."
            for name in ("w2e_query", "e2w_query", "e2e_query"):
                for p in ("weight", "bias"):
                    state[f"{prefix}{name}.{p}"] = state[f"{prefix}query.{p}"].clone()
        config.use_entity_aware_attention = True
    for key in HF_TIED_KEYS:  # transformers fills them in from their sources
        state.pop(key, None)
    config.architectures = ["LukeForMaskedLM"]

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        _write_tokenizer(tmp, tokenizer_dir, vocab, max_entity_length, max_mention_length)
        _check_tokenizer(tmp, source_tokenizer)
    return out_dir


def _write_tokenizer(out: Path, tokenizer_dir: Path, vocab: dict, max_entity_length: int, max_mention_length: int):
    shutil.copy(tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
    if (tokenizer_dir / "sentencepiece.bpe.model").is_file():
        shutil.copy(tokenizer_dir / "sentencepiece.bpe.model", out / "sentencepiece.bpe.model")
    (out / "entity_vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    config = {
        "tokenizer_class": "MLukeTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
        "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
        "entity_unk_token": UNK, "entity_pad_token": PAD, "entity_mask_token": MASK,
        "entity_mask2_token": MASK2, "max_entity_length": max_entity_length,
        "max_mention_length": max_mention_length, "model_max_length": 512, "task": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _check_tokenizer(out: Path, source_tokenizer) -> None:
    """The exported MLukeTokenizer must give the source tokenizer's ids (up to the upstream unk bug)."""
    tokenizer = MLukeTokenizer.from_pretrained(str(out))
    unk = source_tokenizer.token_to_id("<unk>")
    for text in SAMPLE_TEXTS:
        expected = source_tokenizer.encode(text).ids
        got = tokenizer(text)["input_ids"]
        if len(got) != len(expected) or any(g != e and e != unk for g, e in zip(got, expected)):
            raise RuntimeError(f"{out}: exported MLukeTokenizer encodes {text!r} as {got}, the source "
                               f"tokenizer as {expected}")


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, data_dir=None, tokenizer=None,
                      entity_vocab=None, entity_aware_attention: bool = False) -> Path:
    """`launch/export.py`: export what `checkpoint` names (pretrain/weights.py: a pretraining run directory,
    a checkpoint, or an exported/initialized model). The tokenizer and entity vocabulary come from
    `data_dir` or `tokenizer` + `entity_vocab` when given, else from the export itself, else from the
    preprocessing output the run trained on (its data.dir)."""
    source = resolve_source(str(checkpoint))
    if source.kind == "xlmr":
        raise ConfigError(f"{checkpoint}: an XLM-R model; write an initial mLUKE with launch/init_model.py")
    model = load_model(source)
    if data_dir is None and tokenizer is None:
        if source.kind == "export":
            tokenizer = source.path
            entity_vocab = entity_vocab or Path(source.path) / "entity_vocab.json"
        else:  # a checkpoint records its run's configuration
            data_dir = read_trainer_state(Path(source.path))["config"]["data"]["dir"]
    return export_model(model, out_dir, data_dir=data_dir, tokenizer_dir=tokenizer, entity_vocab=entity_vocab,
                        entity_aware_attention=entity_aware_attention)


def init_model_dir(xlmr: str, entity_vocab: str | Path, out_dir: str | Path, tokenizer: str | None = None,
                   entity_emb_size: int = 256, use_entity_aware_attention: bool = False, seed: int = 0,
                   max_entity_length: int = 32, max_mention_length: int = 30) -> Path:
    """`launch/init_model.py`: mLUKE initialized from XLM-R (pretrain/weights.py), written as an export.
    `tokenizer` defaults to `xlmr` (a hub name is saved to a temporary directory first)."""
    import tempfile

    from transformers import AutoTokenizer

    model = init_from_xlmr(xlmr, entity_vocab_size(entity_vocab), entity_emb_size, use_entity_aware_attention, seed)
    tokenizer = tokenizer or xlmr
    with tempfile.TemporaryDirectory() as tmp:
        if not (Path(tokenizer) / "tokenizer.json").is_file():
            AutoTokenizer.from_pretrained(tokenizer).save_pretrained(tmp)
            tokenizer = tmp
        return export_model(model, out_dir, tokenizer_dir=tokenizer, entity_vocab=entity_vocab,
                            max_entity_length=max_entity_length, max_mention_length=max_mention_length)
