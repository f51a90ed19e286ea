"""The published mLUKE recipe, item by item: the reference's value and where it is written, ours where we
differ on purpose, and why. One place: docs/recipe.md shows this table and tests/test_recipe.py checks that
`experiment=mluke_base` / `mluke_large` and conf/preprocess.yaml resolve to it.

Sources are files of studio-ousia/luke at commit 2516545 (the authors' code) and the published
studio-ousia/mluke-base and -large configs on the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REFERENCE = "studio-ousia/luke@2516545"
SAME = object()  # "ours" of an item we reproduce as is


@dataclass(frozen=True)
class Item:
    """`key`: the setting, `pretrain:<key>` or `preprocess:<key>` for a config key (checked against the
    resolved configs), or a plain description for a choice made in code. `reference`/`ours`: one value, or
    {"mluke_base": ..., "mluke_large": ...} where the sizes differ."""

    key: str
    reference: Any
    source: str
    ours: Any = SAME
    why: str = ""

    def value(self, which: str, experiment: str):
        value = self.reference if which == "reference" or self.ours is SAME else self.ours
        return value[experiment] if isinstance(value, dict) else value


STAGE1, STAGE2 = "pretraining_config/mluke_*_stage1.json", "pretraining_config/mluke_*_stage2.json"
STAGES = "pretraining_config/mluke_*_stage{1,2}.json"
TRAIN, BATCHES = "luke/pretraining/train.py", "luke/pretraining/batch_generator.py"
DATASET, VOCAB = "luke/pretraining/dataset.py", "luke/utils/entity_vocab.py"

ITEMS = (
    # ---- model
    Item("pretrain:model.init_from", {"mluke_base": "xlm-roberta-base", "mluke_large": "xlm-roberta-large"},
         "pretraining.md (--bert-model-name)"),
    Item("pretrain:model.entity_emb_size", 256, f"{TRAIN} (--entity-emb-size)"),
    Item("pretrain:model.use_entity_aware_attention", False,
         "hub studio-ousia/mluke-{base,large} config.json; mLUKE pretrains with plain attention"),
    # ---- optimization
    Item("pretrain:optim.lr.entity", 5e-4, f"{STAGE1} (stage 1: entity side only, --fix-bert-weights)"),
    Item("pretrain:optim.lr.full", {"mluke_base": 1e-4, "mluke_large": 5e-5}, STAGE2),
    Item("pretrain:optim.betas", [0.9, 0.999], STAGES),
    Item("pretrain:optim.eps", 1e-6, STAGES),
    Item("pretrain:optim.weight_decay", 0.01, f"{STAGES}; none on biases and LayerNorm ({TRAIN})"),
    Item("pretrain:optim.bias_correction", False, f"{STAGES} (AdamW, \"bias_correction\": false)"),
    Item("pretrain:optim.warmup_steps", 2500, f"{STAGES} (WarmupDecayLR, linear from 0)"),
    Item("pretrain:trainer.max_steps", 540326, f"{STAGES} (total_num_steps, each stage)"),
    Item("pretrain:optim.grad_clip", 10000.0, f"{STAGES} (gradient_clipping)"),
    Item("pretrain:trainer.global_batch_size", 2048, f"{STAGES} (train_batch_size)"),
    Item("pretrain:trainer.micro_batch_size", 4, f"{STAGES} (train_micro_batch_size_per_gpu)",
         ours={"mluke_base": 32, "mluke_large": 16},
         why="the same global batch of 2048 with fewer accumulation steps: the update is the same, the GPU busier"),
    Item("pretrain:trainer.precision", "fp32", f"{STAGES} (no fp16/bf16 section)", ours="bf16",
         why="mixed precision (torch autocast): weights, gradients, their accumulation and reduction and the "
             "optimizer stay fp32 as in the reference (frozen weights are never rounded); only matrix products "
             "run in bf16, several times faster on GPUs. trainer.precision=fp32 reproduces the reference exactly"),
    Item("pretrain:deepspeed.zero_stage", 0, f"{STAGES} (no zero_optimization section)", ours=1,
         why="optimizer states sharded across GPUs: same update, less memory per GPU"),
    # ---- data and masking
    Item("pretrain:data.sampling_alpha", 0.7, f"{TRAIN} (--sampling-smoothing)"),
    Item("pretrain:data.sample_languages_by", "example", f"{BATCHES} (DatasetSampler draws a language per example)"),
    Item("pretrain:data.mlm_probability", 0.15, f"{TRAIN} (--masked-lm-prob)"),
    Item("pretrain:data.mep_probability", 0.15, f"{TRAIN} (--masked-entity-prob)"),
    Item("pretrain:data.whole_word_masking", False, "pretraining.md (mLUKE: --subword-masking)"),
    Item("masked words: 80% <mask>, 10% a random word, 10% unchanged; exactly max(1, round(15% of n)) per example",
         "random word: any id from 2 to vocab_size-1", f"{TRAIN} (--random-word-prob, --unmasked-word-prob), {BATCHES}",
         ours="random word: any id that is not a special token",
         why="the reference's range also draws </s>, <unk> and <mask>, which never stand for a word"),
    Item("masked entities: all become [MASK] (no random or unchanged ones); words in their spans stay", "same",
         f"{TRAIN} (--random-entity-prob 0, --unmasked-entity-prob 0, no --mask-words-in-entity-span)"),
    Item("stage 1 trains the entity embeddings and the entity head only; stage 2 everything, optimizer reset",
         "same", f"{TRAIN} (--fix-bert-weights; --reset-optimization-states), pretraining.md"),
    Item("learning-rate schedule: DeepSpeed's WarmupDecayLR (the first two steps at lr 0)", "same",
         STAGES),
    Item("a language whose examples are used up", "leaves the mixture", BATCHES,
         ours="starts another pass in a new order",
         why="the language mixture stays p ∝ n^0.7 for the whole run; small languages repeat, as they do over "
             "the reference's 20 epochs"),
    # ---- entity vocabulary
    Item("preprocess:entity_vocab.size", 1_200_000, "pretraining.md (build_multilingual_entity_vocab --vocab-size)"),
    Item("preprocess:entity_vocab.min_num_languages", 3, "pretraining.md (--min-num-languages)"),
    Item("preprocess:entity_vocab.per_language_size", 1_000_000, f"{VOCAB} (build-entity-vocab --vocab-size)"),
    Item("entities ranked by link count; ties", "in the order the counting workers returned them", VOCAB,
         ours="by (language, title)", why="the same vocabulary on every run"),
    Item("special entities [PAD] [UNK] [MASK] = 0 1 2; [MASK2] appended (HF conversion)", "same",
         f"{VOCAB}; transformers' convert_luke_original_pytorch_checkpoint_to_pytorch"),
    # ---- dataset
    Item("preprocess:dataset.max_seq_length", 512, f"{DATASET} (--max-seq-length, <s> and </s> included)"),
    Item("preprocess:dataset.max_entity_length", 128, f"{DATASET} (--max-entity-length)"),
    Item("preprocess:dataset.max_mention_length", 30, f"{DATASET} (--max-mention-length)"),
    Item("preprocess:dataset.long_mentions", "truncate", f"{DATASET} (a mention keeps its first 30 tokens)"),
    Item("preprocess:dataset.entity_overflow", "truncate", f"{DATASET} (links[:max_entity_length])", ours="split",
         why="an example is closed before its 129th entity instead of dropping the links past 128: no entity "
             "supervision is lost (rare: ~25 links per 512 tokens on average)"),
    Item("preprocess:dataset.min_sentence_length", 5, f"{DATASET} (--min-sentence-length)"),
    Item("preprocess:dataset.keep_unknown_entities", False, "pretraining.md (mLUKE: no --include-unk-entities)"),
    Item("sentences", "ICU sentence break iterator of the language", "luke/utils/sentence_splitter.py",
         ours="the same, plus Thai (and Lao) split at spaces between long clauses",
         why="ICU has no sentence rules for Thai: a whole paragraph would be one over-long sentence"),
    Item("tokenization around links", "the text before a link and the link text tokenized separately", DATASET,
         ours="each sentence tokenized whole; only a token that straddles a link boundary is split there",
         why="the model sees text tokenized as at fine-tuning time"),
    Item("pages and links", "wikipedia2vec's dump reader", "luke/utils/..., wikipedia2vec DumpDB",
         ours="article namespace only; HTML entities decoded; disambiguation pages excluded; redirect chains "
              "followed; #section links kept as links to their page; stable special ids",
         why="cleaner text and fewer wrong or lost entities"),
    # ---- export
    Item("export: tokenizer max_entity_length", 32, "hub studio-ousia/mluke-{base,large} tokenizer_config.json"),
    Item("export: [MASK2] starts as [MASK] (embedding and prediction bias)", "same",
         "transformers' mLUKE conversion script"),
)


def config_items():
    """(config name, key, item) of the items that are config keys."""
    for item in ITEMS:
        config, sep, key = item.key.partition(":")
        if sep and config in ("pretrain", "preprocess") and " " not in key:
            yield config, key, item


def _show(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.removeprefix('mluke_')}: {_show(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value < 0.01:
        return f"{value:g}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def table() -> str:
    """The recipe as the markdown table of docs/recipe.md (a test checks that the doc holds it verbatim)."""
    rows = ["| setting | reference | reference source | ours | why |", "|---|---|---|---|---|"]
    for item in ITEMS:
        config, sep, key = item.key.partition(":")
        setting = f"`{key}` ({config})" if sep and config in ("pretrain", "preprocess") else item.key
        ours = "same" if item.ours is SAME else _show(item.ours)
        rows.append(f"| {setting} | {_show(item.reference)} | {item.source} | {ours} | {item.why} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m pretrain.recipe: the table for docs/recipe.md
    print(table())
