"""mLUKE for pretraining: XLM-R encoder + entity embeddings, masked word and masked entity prediction.

One readable module. Parameter names and shapes are exactly those of `transformers.LukeForMaskedLM`,
so `state_dict()` loads into the HF model and back with `strict=True` (tests/test_model.py checks it).
Differences from the HF model are in how things are computed, not in what is computed:

- Word and entity hidden states travel through the encoder as one sequence per example (its words, then
  its entities), in one of two layouts: `Padded` (B, S, H) with a key-padding mask, one
  `scaled_dot_product_attention` call per layer (the CPU path); or `Packed` (T, H), the real tokens only
  (no FLOPs on padding), with variable-length flash attention (CUDA in fp16/bf16, when the batch carries
  the collator's unpadding indices). Entity-aware attention packs its four query/key combinations into the
  same one call (see `SelfAttention`).
- The two prediction heads run only at the masked positions given by the collator (pretrain/masking.py),
  and their loss is computed chunk by chunk without ever holding the logits of a whole batch
  (pretrain/fused_head.py): a 250k-word / 1.2M-entity softmax is what makes the HF model unusable for
  pretraining.
- Whatever the batch holds (no entities, nothing masked), every module runs, on empty tensors if need be,
  so every trainable parameter gets a gradient (zero if unused): ZeRO-3 ranks gather and reduce the same
  parameters in the same order. Nothing in forward or backward reads a device value on the host.
- `lm_head.decoder.weight` is tied to the word embeddings (as in the original LUKE/mLUKE; HF does not
  tie it, so pretrain/export.py writes it out explicitly). The entity decoder is tied to the entity
  embeddings, as in HF.

The config is a `transformers.LukeConfig`. `config.gradient_checkpointing` (or the attribute of the
same name on the model) turns on activation checkpointing per layer; the attribute `unpad` chooses the
`Packed` layout (None: on CUDA in fp16/bf16 or under such autocast, without entity-aware attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import LukeConfig

from .fused_head import linear_cross_entropy

# The batch keys the encoder reads (pretrain/masking.py), in `MLukeForPretraining._encode`'s order.
ENCODER_KEYS = ("input_ids", "attention_mask", "entity_ids", "entity_attention_mask", "entity_position_ids",
                "word_tokens", "entity_tokens")


@dataclass
class PretrainingOutput:
    """Losses are means over this batch's masked tokens; counts let a trainer weight across micro-batches."""

    loss: torch.Tensor  # loss_mlm + loss_mep
    loss_mlm: torch.Tensor
    loss_mep: torch.Tensor
    acc_mlm: torch.Tensor
    acc_mep: torch.Tensor
    num_mlm: torch.Tensor  # number of masked words (long, 0-dim)
    num_mep: torch.Tensor  # number of masked entities (long, 0-dim)
    # each masked word's / entity's loss, in the order of the batch's mlm_positions / mep_positions (no gradient)
    token_loss_mlm: torch.Tensor | None = None
    token_loss_mep: torch.Tensor | None = None


def word_position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """RoBERTa/fairseq positions: pad_id+1, pad_id+2, ... for tokens; pad_id for padding (as HF does)."""
    not_pad = input_ids.ne(pad_token_id).int()
    return (torch.cumsum(not_pad, dim=1) * not_pad).long() + pad_token_id


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (HF `LukeEmbeddings`)."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings(word_position_ids(input_ids, self.pad_token_id))
        x = x + self.token_type_embeddings.weight[0]  # all token type 0
        return self.dropout(self.LayerNorm(x))


class EntityEmbeddings(nn.Module):
    """Entity embedding (entity_emb_size, projected without bias) + mean position embedding of the mention's
    tokens + token type, LayerNorm, dropout (HF `LukeEntityEmbeddings`)."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.entity_embeddings = nn.Embedding(config.entity_vocab_size, config.entity_emb_size, padding_idx=0)
        if config.entity_emb_size != config.hidden_size:
            self.entity_embedding_dense = nn.Linear(config.entity_emb_size, config.hidden_size, bias=False)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, entity_ids: torch.Tensor, entity_position_ids: torch.Tensor) -> torch.Tensor:
        x = self.entity_embeddings(entity_ids)
        if hasattr(self, "entity_embedding_dense"):
            x = self.entity_embedding_dense(x)
        # Mean over the mention's positions (-1 = padding) as one weighted embedding_bag: it never
        # materializes the (batch, entities, mention_length, hidden) tensor the HF model builds.
        valid = entity_position_ids.ne(-1)
        weights = valid / valid.sum(-1, keepdim=True).clamp(min=1)
        mention_length = entity_position_ids.size(-1)
        pos = F.embedding_bag(
            entity_position_ids.clamp(min=0).reshape(-1, mention_length),
            self.position_embeddings.weight,
            per_sample_weights=weights.reshape(-1, mention_length).to(self.position_embeddings.weight.dtype),
            mode="sum",
        )
        x = x + pos.view_as(x) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class Padded:
    """Hidden states (B, S, H): each row its words (S_w = L) then its entities, padding masked out of attention."""

    def __init__(self, attention_mask: torch.Tensor, entity_attention_mask: torch.Tensor):
        self.num_words = attention_mask.size(1)
        # Always a mask: whether a batch has padding is a fact about its values, and reading one is a host sync.
        self.mask = torch.cat([attention_mask, entity_attention_mask], dim=1).bool()[:, None, None, :]

    def pack(self, words: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        return torch.cat([words, entities], dim=1)

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, L, ...), (B, E, ...)
        return x[:, : self.num_words], x[:, self.num_words :]

    split, merge = unpack, pack  # the word and entity parts of any per-token tensor

    def attend(self, q, k, v, dropout_p: float, scale: float) -> torch.Tensor:  # (B, S, heads, head_dim)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=self.mask, dropout_p=dropout_p, scale=scale)
        return out.transpose(1, 2)


class Packed:
    """Hidden states (T, H) of the real tokens only, example after example (its words, then its entities).

    Built from the collator's `word_tokens` / `entity_tokens` (flat indices of the real words and entities in
    the padded tensors), whose lengths are host-side facts: nothing here waits for the device. Attention is
    flash attention over the variable-length sequences (CUDA, fp16/bf16); elsewhere the same per-example
    attention runs in the padded layout (`Padded.attend`), so that the CPU tests cover everything else."""

    def __init__(self, attention_mask, entity_attention_mask, word_tokens, entity_tokens):
        (self.batch, self.num_words), self.num_entities = attention_mask.shape, entity_attention_mask.size(1)
        words_per_row = attention_mask.sum(1)
        lengths = words_per_row + entity_attention_mask.sum(1)
        starts = lengths.cumsum(0) - lengths
        self.cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).int()
        # An upper bound known on the host (the exact maximum would need a sync); flash attention uses it to
        # size its grid, blocks past a sequence's end do nothing.
        self.max_seqlen = self.num_words + self.num_entities
        word_row, word_col = word_tokens // self.num_words, word_tokens % self.num_words
        entity_row, entity_col = entity_tokens // max(self.num_entities, 1), entity_tokens % max(self.num_entities, 1)
        self.word_rows = starts[word_row] + word_col  # where each real word / entity sits in the packed layout
        self.entity_rows = starts[entity_row] + words_per_row[entity_row] + entity_col
        self.rows = torch.cat([self.word_rows, self.entity_rows])
        self.word_tokens, self.entity_tokens = word_tokens, entity_tokens
        self.padded = Padded(attention_mask, entity_attention_mask)  # attention off CUDA: in the padded layout
        self.padded_index = self.merge(word_row * self.max_seqlen + word_col,  # packed row -> (B, S) position
                                       entity_row * self.max_seqlen + self.num_words + entity_col)

    def merge(self, words: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        """Per-token tensors of the real words (T_w, ...) and entities (T_e, ...) in the packed order (T, ...)."""
        both = torch.cat([words, entities])
        return both.new_empty(both.shape).index_copy(0, self.rows, both)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.index_select(0, self.word_rows), x.index_select(0, self.entity_rows)

    def pack(self, words: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:  # (B, L, H), (B, E, H) -> (T, H)
        return self.merge(words.flatten(0, 1).index_select(0, self.word_tokens),
                          entities.flatten(0, 1).index_select(0, self.entity_tokens))

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, L, H), (B, E, H), zeros at padding
        words, entities = self.split(x)
        return (self._padded(words, self.word_tokens, self.num_words),
                self._padded(entities, self.entity_tokens, self.num_entities))

    def _padded(self, t: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
        """Rows of `t` at flat positions `index` of a (B, length, ...) tensor of zeros."""
        full = t.new_zeros(self.batch * length, *t.shape[1:]).index_copy(0, index, t)
        return full.unflatten(0, (self.batch, length))

    def attend(self, q, k, v, dropout_p: float, scale: float) -> torch.Tensor:  # (T, heads, head_dim)
        if flash_varlen_supported(q, v):
            return flash_varlen(q, k, v, self.cu_seqlens, self.max_seqlen, dropout_p, scale)
        q, k, v = (self._padded(t, self.padded_index, self.max_seqlen) for t in (q, k, v))
        return self.padded.attend(q, k, v, dropout_p, scale).flatten(0, 1).index_select(0, self.padded_index)


FLASH_DEVICES = ("cuda",)  # where torch has flash attention (a test adds the CPU, with a stand-in for the op)
HALF = (torch.float16, torch.bfloat16)


def flash_varlen_supported(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Flash attention needs CUDA, fp16/bf16, and one head size (a multiple of 8, at most 256) for queries
    and values (entity-aware attention widens queries and keys: it attends in the padded layout)."""
    return (q.device.type in FLASH_DEVICES and q.dtype in HALF and q.size(-1) == v.size(-1)
            and q.size(-1) % 8 == 0 and q.size(-1) <= 256)


def flash_varlen(q, k, v, cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float, scale: float):
    """Flash attention over packed sequences (T, heads, head_dim); autograd runs its backward. The op behind
    `torch.nn.attention.varlen.varlen_attn`, called directly because that one fixes dropout at 0."""
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                                   dropout_p, False, False, scale=scale)[0]


class SelfAttention(nn.Module):
    """Multi-head self-attention over each example's [words; entities], one attention call.

    Entity-aware attention uses a different query projection for each (query type, key type) pair:
    word->word `query`, word->entity `w2e_query`, entity->word `e2w_query`, entity->entity `e2e_query`.
    To keep it a single attention call, queries and keys are widened to 2*head_dim:
        word query   = [query(h)     | w2e_query(h)]     word key   = [key(h) | 0     ]
        entity query = [e2w_query(h) | e2e_query(h)]     entity key = [0      | key(h)]
    so q.k picks exactly the right projection for each pair; the scale stays 1/sqrt(head_dim).
    """

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.entity_aware = config.use_entity_aware_attention
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        if self.entity_aware:
            self.w2e_query = nn.Linear(config.hidden_size, config.hidden_size)
            self.e2w_query = nn.Linear(config.hidden_size, config.hidden_size)
            self.e2e_query = nn.Linear(config.hidden_size, config.hidden_size)

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., heads, head_dim)
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def forward(self, x: torch.Tensor, layout: Padded | Packed) -> torch.Tensor:
        # query, key and value as one GEMM (measured on an H200 at base size: 0.43 vs 0.76 ms fwd+bwd per layer).
        # Under ZeRO-3 these weights are read outside their own modules' forward: DeepSpeed gathers them on
        # access (ZeRO-3 runs on CPU check it); whether its prefetcher overlaps them is unmeasured on GPUs.
        qkv = F.linear(x, torch.cat([self.query.weight, self.key.weight, self.value.weight]),
                       torch.cat([self.query.bias, self.key.bias, self.value.bias]))
        q, k, v = (self.heads(t) for t in qkv.split(x.size(-1), dim=-1))
        if self.entity_aware:
            words, entities = layout.split(x)
            (q_words, _), (k_words, k_entities) = layout.split(q), layout.split(k)
            q_entities = torch.cat([self.heads(self.e2w_query(entities)), self.heads(self.e2e_query(entities))], dim=-1)
            q = layout.merge(torch.cat([q_words, self.heads(self.w2e_query(words))], dim=-1), q_entities)
            k = layout.merge(torch.cat([k_words, torch.zeros_like(k_words)], dim=-1),
                             torch.cat([torch.zeros_like(k_entities), k_entities], dim=-1))
        out = layout.attend(q, k, v, self.dropout_p if self.training else 0.0, 1.0 / math.sqrt(self.head_dim))
        return out.reshape(x.shape)


class DenseLayerNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual) (HF `LukeSelfOutput` / `LukeOutput`)."""

    def __init__(self, in_size: int, config: LukeConfig):
        super().__init__()
        self.dense = nn.Linear(in_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseLayerNorm(config.hidden_size, config)

    def forward(self, x, layout):
        return self.output(self.self(x, layout), x)


class Intermediate(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        if config.hidden_act != "gelu":
            raise ValueError(f"hidden_act={config.hidden_act!r} is not supported (mLUKE/XLM-R use 'gelu')")
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """Post-LayerNorm transformer layer (BERT/RoBERTa)."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseLayerNorm(config.intermediate_size, config)

    def forward(self, x, layout):
        x = self.attention(x, layout)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        self.layer = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])


class Pooler(nn.Module):
    """Unused in pretraining; kept (frozen) so the state dict matches HF `LukeModel` and the export has it."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class Luke(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.entity_embeddings = EntityEmbeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)
        self.pooler.requires_grad_(False)


class VocabDecoder(nn.Linear):
    """The projection onto a vocabulary (words or entities). With `labels`: the summed cross-entropy and the
    number of correct predictions, computed chunk by chunk without the full logits (pretrain/fused_head.py);
    without: exact logits (evaluation, tests)."""

    always_pad = False  # split the vocabulary at an aligned width on the CPU too (tests; CUDA always does)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                row_losses: torch.Tensor | None = None):
        bias = self.bias if bias is None else bias
        if labels is None:
            return F.linear(x, self.weight, bias)
        return linear_cross_entropy(x, self.weight, bias, labels, align=x.is_cuda or self.always_pad,
                                    row_losses=row_losses)


class LMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> decoder (tied to word embeddings) + bias (HF `LukeLMHead`)."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = VocabDecoder(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias  # HF ties lm_head.bias and lm_head.decoder.bias

    def forward(self, x, labels=None, row_losses=None):
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))), labels=labels, row_losses=row_losses)


class EntityPredictionHeadTransform(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.entity_emb_size)
        self.LayerNorm = nn.LayerNorm(config.entity_emb_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class EntityPredictionHead(nn.Module):
    """transform -> dot with the (tied) entity embeddings + bias (HF `EntityPredictionHead`)."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.transform = EntityPredictionHeadTransform(config)
        self.decoder = VocabDecoder(config.entity_emb_size, config.entity_vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.entity_vocab_size))

    def forward(self, x, labels=None, row_losses=None):
        return self.decoder(self.transform(x), bias=self.bias, labels=labels, row_losses=row_losses)


class MLukeForPretraining(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = bool(getattr(config, "gradient_checkpointing", False))
        self.unpad: bool | None = None  # the Packed layout; None: where flash attention applies (`_encode`)
        self.luke = Luke(config)
        self.lm_head = LMHead(config)
        self.entity_predictions = EntityPredictionHead(config)
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self):
        self.lm_head.decoder.weight = self.luke.embeddings.word_embeddings.weight
        self.entity_predictions.decoder.weight = self.luke.entity_embeddings.entity_embeddings.weight

    def _init_weights(self, module: nn.Module):
        """LUKE's init (luke/model.py `init_weights`): normal(0, initializer_range), zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        entity_attention_mask: torch.Tensor | None = None,
        entity_position_ids: torch.Tensor | None = None,
        word_tokens: torch.Tensor | None = None,
        entity_tokens: torch.Tensor | None = None,
        **_: object,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Word and entity last hidden states, (B, L, H) and (B, E, H) (None without entity_ids); values at
        padding are unspecified. Extra keys (labels, masked positions) are ignored so a collator batch can be
        passed as `**batch`."""
        words, entities = self._encode(input_ids, attention_mask, entity_ids, entity_attention_mask,
                                       entity_position_ids, word_tokens, entity_tokens)
        return words, (entities if entity_ids is not None else None)

    def _encode(self, input_ids, attention_mask, entity_ids, entity_attention_mask, entity_position_ids,
                word_tokens, entity_tokens):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if entity_ids is None:  # words only: the entity modules still run, on nothing
            entity_ids = input_ids.new_zeros(input_ids.size(0), 0)
            entity_position_ids = input_ids.new_zeros(input_ids.size(0), 0, 1)
            entity_tokens = input_ids.new_zeros(0)
        if entity_attention_mask is None:
            entity_attention_mask = torch.ones_like(entity_ids)
        words = self.luke.embeddings(input_ids)
        entities = self.luke.entity_embeddings(entity_ids, entity_position_ids)
        unpad = self.unpad
        if unpad is None:  # where attention can be flash attention: products in fp16/bf16 (autocast's or the weights')
            device = words.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else words.dtype
            unpad = device in FLASH_DEVICES and dtype in HALF and not self.config.use_entity_aware_attention
        if unpad and word_tokens is not None and entity_tokens is not None:
            layout = Packed(attention_mask, entity_attention_mask, word_tokens, entity_tokens)
        else:
            layout = Padded(attention_mask, entity_attention_mask)
        x = layout.pack(words, entities)
        for layer in self.luke.encoder.layer:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, layout, use_reentrant=False)
            else:
                x = layer(x, layout)
        return layout.unpack(x)

    def forward(self, batch: dict[str, torch.Tensor]) -> PretrainingOutput:
        """`batch` as built by pretrain.masking.MaskingCollator (keys documented there)."""
        words, entities = self._encode(*(batch.get(k) for k in ENCODER_KEYS))
        nothing = batch["mlm_labels"].new_zeros(0)
        loss_mlm, acc_mlm, num_mlm, token_mlm = self._masked_loss(self.lm_head, words, batch["mlm_positions"],
                                                                  batch["mlm_labels"])
        loss_mep, acc_mep, num_mep, token_mep = self._masked_loss(
            self.entity_predictions, entities, batch.get("mep_positions", nothing), batch.get("mep_labels", nothing))
        return PretrainingOutput(
            loss=loss_mlm + loss_mep, loss_mlm=loss_mlm, loss_mep=loss_mep,
            acc_mlm=acc_mlm, acc_mep=acc_mep, num_mlm=num_mlm, num_mep=num_mep,
            token_loss_mlm=token_mlm, token_loss_mep=token_mep,
        )

    @staticmethod
    def _masked_loss(head: nn.Module, hidden: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor):
        """Head only at `positions` (flat indices into batch*length). Sum / max(count, 1) instead of a mean so
        an empty selection gives 0 rather than NaN (and zero gradients), with no host synchronization."""
        selected = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
        token_losses = torch.empty(labels.numel(), dtype=torch.float32, device=labels.device)
        loss_sum, correct = head(selected, labels=labels, row_losses=token_losses)
        count = labels.new_full((), labels.numel())  # a fill kernel, not a host-to-device copy (which syncs)
        denom = count.clamp(min=1).float()
        return loss_sum / denom, correct / denom, count, token_losses

    def masked_logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Word and entity logits at the masked positions (for tests and evaluation)."""
        words, entities = self.encode(**batch)
        word_logits = self.lm_head(words.reshape(-1, words.size(-1))[batch["mlm_positions"]])
        entity_logits = None
        if entities is not None and "mep_positions" in batch:
            entity_logits = self.entity_predictions(entities.reshape(-1, entities.size(-1))[batch["mep_positions"]])
        return word_logits, entity_logits

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (tied ones counted once); without embedding tables when asked (for MFU)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for emb in (self.luke.embeddings, self.luke.entity_embeddings):
                for p in emb.parameters():
                    if p.dim() == 2 and p.size(0) > 1:
                        params.pop(id(p), None)
        return sum(p.numel() for p in params.values())


def no_dropout(model: MLukeForPretraining) -> MLukeForPretraining:
    """Dropout off everywhere, for comparing two computations of one training step (tests, benchmarks)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    for layer in model.luke.encoder.layer:
        layer.attention.self.dropout_p = 0.0
    return model
