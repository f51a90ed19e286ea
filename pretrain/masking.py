"""Masking collator for mLUKE pretraining: masked language modeling + masked entity prediction.

Input: a list of dataset rows (preprocessing/contract.py COLUMNS), each a mapping with
    word_ids      list[int]        including <s> first and </s> last
    entity_ids    list[int]
    entity_spans  list[[start, end)] token indices into word_ids, one per entity
(lists, numpy arrays or tensors; other keys such as page_id/language are ignored).

Output: a dict of torch tensors (int64), the batch that `MLukeForPretraining.forward` takes:
    input_ids              (B, L)     word ids after masking, padded with pad_token_id; L = longest row
                                      rounded up to pad_to_multiple_of
    attention_mask         (B, L)     1 = token, 0 = padding
    entity_ids             (B, E)     entity ids after masking, padded with entity_pad_id (0); E = most
                                      entities in a row rounded up to pad_to_multiple_of (0 if none at all)
    entity_attention_mask  (B, E)     1 = entity, 0 = padding
    entity_position_ids    (B, E, M)  positions in input_ids of each mention's tokens, -1 = padding;
                                      M = longest mention in the batch, at most max_mention_length
                                      (longer mentions keep their first M tokens)
    mlm_positions          (N,)       flat indices into input_ids.view(-1) of the masked words
    mlm_labels             (N,)       their original word ids
    mep_positions          (K,)       flat indices into entity_ids.view(-1) of the masked entities
    mep_labels             (K,)       their original entity ids

Masking follows the reference implementation (studio-ousia/luke, luke/pretraining/batch_generator.py):
- words: per example exactly max(1, round(mlm_prob * n)) of its n maskable tokens (special tokens and
  padding are never maskable) are chosen; each chosen one becomes <mask> (80%), a random non-special
  word (10%) or stays (10%). mLUKE masks subwords; `whole_word=True` chooses whole words instead
  (a word = a token starting with "▁" plus the following non-starting tokens; the count is in words)
  and applies one 80/10/10 draw per word.
- entities: per example exactly max(1, round(mep_prob * n)) of its n entities become [MASK].
Everything is vectorized over the batch; results depend only on the rows and the generator/seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


class MaskingCollator:
    def __init__(
        self,
        vocab_size: int,
        mask_token_id: int,
        special_token_ids: Sequence[int],
        pad_token_id: int = 1,
        entity_mask_id: int = 2,
        entity_pad_id: int = 0,
        mlm_prob: float = 0.15,
        mep_prob: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word: bool = False,
        word_start: torch.Tensor | None = None,
        max_mention_length: int = 30,
        pad_to_multiple_of: int = 8,
        seed: int = 0,
    ):
        """`special_token_ids`: never masked nor used as random replacements (e.g. tokenizer.all_special_ids).
        `word_start`: bool tensor (vocab_size,), True for tokens that begin a word; needed for whole_word."""
        if whole_word and word_start is None:
            raise ValueError("whole_word=True needs word_start (use MaskingCollator.from_tokenizer)")
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.special_token_ids = torch.tensor(sorted(set(special_token_ids) | {mask_token_id, pad_token_id}))
        self.entity_mask_id = entity_mask_id
        self.entity_pad_id = entity_pad_id
        self.mlm_prob = mlm_prob
        self.mep_prob = mep_prob
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word = whole_word
        self.word_start = word_start
        self.max_mention_length = max_mention_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.generator = torch.Generator().manual_seed(seed)
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[self.special_token_ids] = False
        self.random_word_ids = allowed.nonzero().squeeze(1)  # replacements: any non-special word

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> MaskingCollator:
        """Ids from a (XLM-R style) transformers tokenizer; computes word_start when whole_word=True."""
        if kwargs.get("whole_word"):
            tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            kwargs.setdefault("word_start", torch.tensor([t.startswith("\u2581") for t in tokens]))
        return cls(
            vocab_size=len(tokenizer),
            mask_token_id=tokenizer.mask_token_id,
            special_token_ids=tokenizer.all_special_ids,
            pad_token_id=tokenizer.pad_token_id,
            **kwargs,
        )

    def _round_up(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return -(-n // m) * m if m > 1 else n

    def __call__(self, rows: Sequence[Mapping], generator: torch.Generator | int | None = None) -> dict:
        """`generator`: a torch.Generator, an int seed, or None for the collator's own (seeded) generator."""
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        gen = generator if generator is not None else self.generator
        words = [torch.as_tensor(r["word_ids"], dtype=torch.long) for r in rows]
        entities = [torch.as_tensor(r["entity_ids"], dtype=torch.long) for r in rows]
        spans = [torch.as_tensor(r["entity_spans"], dtype=torch.long).reshape(-1, 2) for r in rows]
        for i, (w, e, s) in enumerate(zip(words, entities, spans)):
            if len(e) != len(s) or (len(s) and (s[:, 0].min() < 0 or s[:, 1].max() > len(w) or (s[:, 1] <= s[:, 0]).any())):
                page = rows[i].get("page_id", "?") if isinstance(rows[i], Mapping) else "?"
                raise ValueError(f"row {i} (page_id={page}): entity_spans must be one [start, end) per entity within word_ids")

        batch_size = len(rows)
        length = self._round_up(max(len(w) for w in words))
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        num_entities = self._round_up(max(len(e) for e in entities))
        entity_ids = torch.full((batch_size, num_entities), self.entity_pad_id, dtype=torch.long)
        entity_spans = torch.zeros((batch_size, num_entities, 2), dtype=torch.long)
        for i, (w, e, s) in enumerate(zip(words, entities, spans)):
            input_ids[i, : len(w)] = w
            entity_ids[i, : len(e)] = e
            entity_spans[i, : len(s)] = s
        attention_mask = (torch.arange(length) < torch.tensor([len(w) for w in words])[:, None]).long()
        entity_attention_mask = (torch.arange(num_entities) < torch.tensor([len(e) for e in entities])[:, None]).long()

        mention_length = min(self.max_mention_length, max([int((s[:, 1] - s[:, 0]).max()) for s in spans if len(s)], default=1))
        positions = entity_spans[..., :1] + torch.arange(mention_length)
        entity_position_ids = positions.masked_fill(positions >= entity_spans[..., 1:], -1)

        mlm_positions, mlm_labels = self._mask_words(input_ids, attention_mask, gen)
        mep_mask = _choose(entity_attention_mask.bool(), self.mep_prob, gen)
        mep_positions = mep_mask.view(-1).nonzero().squeeze(1)
        mep_labels = entity_ids.view(-1)[mep_positions]
        entity_ids.view(-1)[mep_positions] = self.entity_mask_id
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "entity_ids": entity_ids,
            "entity_attention_mask": entity_attention_mask,
            "entity_position_ids": entity_position_ids,
            "mlm_positions": mlm_positions,
            "mlm_labels": mlm_labels,
            "mep_positions": mep_positions,
            "mep_labels": mep_labels,
        }

    def _mask_words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen: torch.Generator):
        """Choose masking units (tokens, or whole words), then 80/10/10 per unit; modifies input_ids in place."""
        maskable = attention_mask.bool() & ~torch.isin(input_ids, self.special_token_ids)
        if self.whole_word:
            prev_maskable = torch.nn.functional.pad(maskable[:, :-1], (1, 0), value=False)
            begins = maskable & (self.word_start[input_ids] | ~prev_maskable)
        else:
            begins = maskable
        # unit index of each token (the word it belongs to); meaningful only where maskable
        unit = (torch.cumsum(begins.long(), dim=1) - 1).clamp(min=0)
        num_units = begins.sum(1, keepdim=True)
        unit_exists = torch.arange(input_ids.size(1)) < num_units
        chosen = _choose(unit_exists, self.mlm_prob, gen).gather(1, unit) & maskable
        u = torch.rand(input_ids.shape, generator=gen).gather(1, unit)  # one 80/10/10 draw per unit
        random_ids = self.random_word_ids[torch.randint(len(self.random_word_ids), input_ids.shape, generator=gen)]

        positions = chosen.view(-1).nonzero().squeeze(1)
        labels = input_ids.view(-1)[positions]
        flat, u, random_ids = input_ids.view(-1), u.view(-1)[positions], random_ids.view(-1)[positions]
        to_mask = u < self.mask_replace_prob
        to_random = ~to_mask & (u < self.mask_replace_prob + self.random_replace_prob)
        flat[positions[to_mask]] = self.mask_token_id
        flat[positions[to_random]] = random_ids[to_random]
        return positions, labels


def _choose(candidates: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Per row, exactly max(1, round(prob * n)) of the n True entries of `candidates` (0 if n == 0),
    uniformly at random: rank random scores, non-candidates ranked last."""
    n = candidates.sum(1, keepdim=True)
    k = torch.where(n > 0, torch.round(n * prob).long().clamp(min=1), 0)
    scores = torch.rand(candidates.shape, generator=gen).masked_fill(~candidates, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    return (rank < k) & candidates


def hf_inputs(batch: dict) -> dict:
    """A collated batch as `transformers.LukeForMaskedLM` takes it: dense `labels` / `entity_labels`
    (-100 where not masked) instead of the flat masked positions (for equality checks and benchmarks)."""
    labels = torch.full_like(batch["input_ids"], -100)
    labels.view(-1)[batch["mlm_positions"]] = batch["mlm_labels"]
    entity_labels = torch.full_like(batch["entity_ids"], -100)
    entity_labels.view(-1)[batch["mep_positions"]] = batch["mep_labels"]
    keys = ("input_ids", "attention_mask", "entity_ids", "entity_attention_mask", "entity_position_ids")
    return {**{k: batch[k] for k in keys}, "labels": labels, "entity_labels": entity_labels}
