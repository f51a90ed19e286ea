"""mLUKE for pretraining: XLM-R encoder + entity embeddings, masked word and masked entity prediction.

One readable module. Parameter names and shapes are exactly those of `transformers.LukeForMaskedLM`,
so `state_dict()` loads into the HF model and back with `strict=True` (tests/test_model.py checks it).
Differences from the HF model are in how things are computed, not in what is computed:

- Word and entity hidden states are concatenated once after the embeddings and travel through the
  encoder as one sequence; attention is one `scaled_dot_product_attention` call per layer, also with
  entity-aware attention (the four query/key combinations are packed into one call, see `SelfAttention`).
- The two prediction heads run only at the masked positions given by the collator (pretrain/masking.py),
  never over the whole sequence: a 250k-word / 1.2M-entity softmax at every position is what makes the
  HF model unusable for pretraining.
- `lm_head.decoder.weight` is tied to the word embeddings (as in the original LUKE/mLUKE; HF does not
  tie it, so pretrain/export.py writes it out explicitly). The entity decoder is tied to the entity
  embeddings, as in HF.

The config is a `transformers.LukeConfig`. `config.gradient_checkpointing` (or the attribute of the
same name on the model) turns on activation checkpointing per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import LukeConfig


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


class SelfAttention(nn.Module):
    """Multi-head self-attention over the concatenated [words; entities] sequence, one SDPA call.

    Entity-aware attention uses a different query projection for each (query type, key type) pair:
    word->word `query`, word->entity `w2e_query`, entity->word `e2w_query`, entity->entity `e2e_query`.
    To keep it a single SDPA call, queries and keys are widened to 2*head_dim:
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

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, H) -> (B, heads, S, head_dim)
        return x.view(x.size(0), x.size(1), self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, num_words: int) -> torch.Tensor:
        # query, key and value as one GEMM (measured on an H200 at base size: 0.43 vs 0.76 ms fwd+bwd per layer).
        # Under ZeRO-3 these weights are read outside their own modules' forward: DeepSpeed gathers them on
        # access (ZeRO-3 runs on CPU check it); whether its prefetcher overlaps them is unmeasured on GPUs.
        qkv = F.linear(x, torch.cat([self.query.weight, self.key.weight, self.value.weight]),
                       torch.cat([self.query.bias, self.key.bias, self.value.bias]))
        q, k, v = (self.heads(t) for t in qkv.split(x.size(-1), dim=-1))
        if self.entity_aware and x.size(1) > num_words:
            words, entities = x[:, :num_words], x[:, num_words:]
            q_words = torch.cat([q[:, :, :num_words], self.heads(self.w2e_query(words))], dim=-1)
            q_entities = torch.cat([self.heads(self.e2w_query(entities)), self.heads(self.e2e_query(entities))], dim=-1)
            q = torch.cat([q_words, q_entities], dim=2)
            zeros = torch.zeros_like(k)
            k = torch.cat(
                [torch.cat([k[:, :, :num_words], zeros[:, :, :num_words]], dim=-1),
                 torch.cat([zeros[:, :, num_words:], k[:, :, num_words:]], dim=-1)],
                dim=2,
            )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout_p if self.training else 0.0,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        return out.transpose(1, 2).reshape(x.shape)


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

    def forward(self, x, attn_mask, num_words):
        return self.output(self.self(x, attn_mask, num_words), x)


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

    def forward(self, x, attn_mask, num_words):
        x = self.attention(x, attn_mask, num_words)
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
    """The projection onto a vocabulary (words or entities). On GPUs its output width is padded to a multiple
    of 8 with -inf logits: an unaligned width such as XLM-R's 250,002 makes cuBLAS fall back to much slower
    kernels (H200, bf16, 1232 x 768 x V fwd+bwd: 6.1 ms at V=250,002, 2.3 ms at 250,008). The extra columns
    get probability 0 and no gradient; callers that need exact logits slice `[..., :out_features]`."""

    always_pad = False  # pad on the CPU too (tests)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        bias = self.bias if bias is None else bias
        pad = -self.out_features % 8
        if pad == 0 or not (x.is_cuda or self.always_pad):
            return F.linear(x, self.weight, bias)
        if bias is None:
            bias = self.weight.new_zeros(self.out_features)
        return F.linear(x, F.pad(self.weight, (0, 0, 0, pad)), F.pad(bias, (0, pad), value=float("-inf")))


class LMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> decoder (tied to word embeddings) + bias (HF `LukeLMHead`)."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = VocabDecoder(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias  # HF ties lm_head.bias and lm_head.decoder.bias

    def forward(self, x):
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))


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

    def forward(self, x):
        return self.decoder(self.transform(x), bias=self.bias)


class MLukeForPretraining(nn.Module):
    def __init__(self, config: LukeConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = bool(getattr(config, "gradient_checkpointing", False))
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
        **_: object,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Word and entity last hidden states, (B, L, H) and (B, E, H) (None without entities).
        Extra keys (labels, masked positions) are ignored so a collator batch can be passed as `**batch`."""
        num_words = input_ids.size(1)
        x = self.luke.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if entity_ids is not None and entity_ids.size(1) > 0:
            x = torch.cat([x, self.luke.entity_embeddings(entity_ids, entity_position_ids)], dim=1)
            if entity_attention_mask is None:
                entity_attention_mask = torch.ones_like(entity_ids)
            attention_mask = torch.cat([attention_mask, entity_attention_mask], dim=1)
        # Boolean key-padding mask (B, 1, 1, S); None when nothing is padded lets SDPA pick flash kernels.
        # On a GPU the check is a host sync per forward (the trainer also syncs once per micro-batch for its
        # skip decision); not measured here whether always masking would be cheaper.
        attn_mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for layer in self.luke.encoder.layer:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, attn_mask, num_words, use_reentrant=False)
            else:
                x = layer(x, attn_mask, num_words)
        return x[:, :num_words], (x[:, num_words:] if x.size(1) > num_words else None)

    def forward(self, batch: dict[str, torch.Tensor]) -> PretrainingOutput:
        """`batch` as built by pretrain.masking.MaskingCollator (keys documented there)."""
        words, entities = self.encode(**batch)
        loss_mlm, acc_mlm, num_mlm = self._masked_loss(
            words, batch["mlm_positions"], batch["mlm_labels"], self.lm_head
        )
        if entities is not None and "mep_positions" in batch:
            loss_mep, acc_mep, num_mep = self._masked_loss(
                entities, batch["mep_positions"], batch["mep_labels"], self.entity_predictions
            )
        else:  # a word-only batch
            zero = words.new_zeros((), dtype=torch.float32)
            loss_mep, acc_mep, num_mep = zero, zero, batch["mlm_labels"].new_zeros(())
        return PretrainingOutput(
            loss=loss_mlm + loss_mep, loss_mlm=loss_mlm, loss_mep=loss_mep,
            acc_mlm=acc_mlm, acc_mep=acc_mep, num_mlm=num_mlm, num_mep=num_mep,
        )

    @staticmethod
    def _masked_loss(hidden: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor, head: nn.Module):
        """Head only at `positions` (flat indices into batch*length). Sum / max(count, 1) instead of a mean so
        an empty selection gives 0 rather than NaN, with no host synchronization."""
        selected = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
        # log-softmax in fp32 also under bf16/fp16; dtype= fuses the upcast into the kernel (no fp32 copy)
        log_probs = F.log_softmax(head(selected), dim=-1, dtype=torch.float32)
        count = labels.new_full((), labels.numel())  # a fill kernel, not a host-to-device copy (which syncs)
        denom = count.clamp(min=1).float()
        loss = F.nll_loss(log_probs, labels, reduction="sum") / denom
        with torch.no_grad():  # correct when the label scores highest (cheaper than argmax on CPU)
            label_score = log_probs.gather(1, labels[:, None]).squeeze(1)
            acc = (label_score >= log_probs.amax(-1)).sum().float() / denom
        return loss, acc, count

    def masked_logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Word and entity logits at the masked positions (for tests and evaluation)."""
        words, entities = self.encode(**batch)
        word_logits = self.lm_head(words.reshape(-1, words.size(-1))[batch["mlm_positions"]])
        word_logits = word_logits[:, : self.config.vocab_size]
        entity_logits = None
        if entities is not None and "mep_positions" in batch:
            entity_logits = self.entity_predictions(entities.reshape(-1, entities.size(-1))[batch["mep_positions"]])
            entity_logits = entity_logits[:, : self.config.entity_vocab_size]
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
