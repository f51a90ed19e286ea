"""MaskingCollator: shapes, padding, exact per-example counts, 80/10/10, specials never touched, determinism."""

import pytest
import torch

from pretrain.masking import MaskingCollator

VOCAB, MASK, SPECIALS = 1000, 999, [0, 1, 2, 3]  # <s> <pad> </s> <unk>, <mask> last (XLM-R layout)


def rows(n: int, seed: int = 0, max_len: int = 120, max_entities: int = 12) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(10, max_len, (1,), generator=g))
        words = [0] + torch.randint(4, MASK, (length - 2,), generator=g).tolist() + [2]
        k = int(torch.randint(0, max_entities, (1,), generator=g))
        starts = torch.randint(1, length - 6, (k,), generator=g).tolist()
        spans = [[s, s + int(torch.randint(1, 5, (1,), generator=g))] for s in starts]
        out.append({"word_ids": words, "entity_ids": torch.randint(3, 500, (k,), generator=g).tolist(),
                    "entity_spans": spans, "page_id": i, "language": "en"})
    return out


def collator(**kw):
    return MaskingCollator(VOCAB, MASK, SPECIALS, **kw)


def expected_count(n: torch.Tensor, p: float = 0.15) -> torch.Tensor:
    return torch.where(n > 0, torch.round(n * p).long().clamp(min=1), 0)


def test_shapes_padding_and_mention_positions():
    data = rows(5, max_entities=4)
    data[0]["entity_ids"], data[0]["entity_spans"] = [7], [[1, 9]]  # longer than max_mention_length=4
    b = collator(max_mention_length=4)(data, generator=0)
    lengths = torch.tensor([len(r["word_ids"]) for r in data])
    assert b["input_ids"].shape[1] % 8 == 0 and b["input_ids"].shape[1] - lengths.max() < 8
    assert torch.equal(b["attention_mask"].sum(1), lengths)
    assert (b["input_ids"][b["attention_mask"] == 0] == 1).all()
    assert b["entity_ids"].shape[1] % 8 == 0 and b["entity_position_ids"].shape[:2] == b["entity_ids"].shape
    assert b["entity_position_ids"].shape[2] == 4
    assert b["entity_position_ids"][0, 0].tolist() == [1, 2, 3, 4]
    for i, r in enumerate(data):
        n = len(r["entity_ids"])
        assert b["entity_attention_mask"][i].sum() == n and (b["entity_ids"][i, n:] == 0).all()
        assert (b["entity_position_ids"][i, n:] == -1).all()
        for j, (s, e) in enumerate(r["entity_spans"]):
            expected = list(range(s, min(e, s + 4)))
            assert b["entity_position_ids"][i, j].tolist() == expected + [-1] * (4 - len(expected))
    assert {k: v.dtype for k, v in b.items()} == {k: torch.long for k in b}


def test_word_masking_statistics_and_invariants():
    data = rows(400, seed=1)
    b = collator()(data, generator=123)
    original = torch.full_like(b["input_ids"], 1)
    for i, r in enumerate(data):
        original[i, : len(r["word_ids"])] = torch.tensor(r["word_ids"])
    pos, labels = b["mlm_positions"], b["mlm_labels"]
    assert torch.equal(labels, original.view(-1)[pos])
    assert not torch.isin(labels, torch.tensor(SPECIALS + [MASK])).any()  # never <s>, </s>, padding
    # exactly max(1, round(0.15 n)) of the n maskable tokens per example
    maskable = torch.tensor([len(r["word_ids"]) - 2 for r in data])
    per_row = torch.bincount(pos // b["input_ids"].shape[1], minlength=len(data))
    assert torch.equal(per_row, expected_count(maskable))
    assert abs(len(pos) / maskable.sum().item() - 0.15) < 0.01
    # 80% <mask>, 10% random non-special word, 10% unchanged; nothing else changes
    new = b["input_ids"].view(-1)[pos]
    masked, kept = new == MASK, new == labels
    randomized = ~masked & ~kept
    assert abs(masked.float().mean() - 0.8) < 0.03 and abs(kept.float().mean() - 0.1) < 0.025
    assert abs(randomized.float().mean() - 0.1) < 0.025
    assert not torch.isin(new[randomized], torch.tensor(SPECIALS)).any()
    untouched = torch.ones_like(original, dtype=torch.bool)
    untouched.view(-1)[pos] = False
    assert torch.equal(b["input_ids"][untouched], original[untouched])


def test_entity_masking_counts():
    data = rows(300, seed=2)
    b = collator()(data, generator=7)
    n = torch.tensor([len(r["entity_ids"]) for r in data])
    per_row = torch.bincount(b["mep_positions"] // b["entity_ids"].shape[1], minlength=len(data))
    assert torch.equal(per_row, expected_count(n))  # at least one per example that has entities
    assert (b["entity_ids"].view(-1)[b["mep_positions"]] == 2).all()  # all [MASK]
    original = torch.zeros_like(b["entity_ids"])
    for i, r in enumerate(data):
        original[i, : len(r["entity_ids"])] = torch.tensor(r["entity_ids"], dtype=torch.long)
    assert torch.equal(b["mep_labels"], original.view(-1)[b["mep_positions"]])
    assert (b["entity_attention_mask"].view(-1)[b["mep_positions"]] == 1).all()  # never padding
    assert (b["entity_ids"] == 2).sum() == len(b["mep_positions"])


def test_determinism():
    data = rows(16, seed=3)
    a, b, c = collator()(data, generator=5), collator()(data, generator=5), collator()(data, generator=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mlm_positions"], c["mlm_positions"])
    first, second = collator(seed=9), collator(seed=9)  # the collator's own generator advances
    x1, x2 = first(data), first(data)
    assert not torch.equal(x1["mlm_positions"], x2["mlm_positions"])
    assert torch.equal(second(data)["mlm_positions"], x1["mlm_positions"])
    assert torch.equal(second(data)["mlm_positions"], x2["mlm_positions"])


def test_whole_word_masking():
    word_start = torch.zeros(VOCAB, dtype=torch.bool)
    word_start[4:500] = True  # ids 4..499 start a word, 500..998 continue one
    data = rows(200, seed=4)
    b = collator(whole_word=True, word_start=word_start)(data, generator=0)
    original = torch.full_like(b["input_ids"], 1)
    for i, r in enumerate(data):
        original[i, : len(r["word_ids"])] = torch.tensor(r["word_ids"])
    chosen = torch.zeros_like(original, dtype=torch.bool)
    chosen.view(-1)[b["mlm_positions"]] = True
    special = torch.isin(original, torch.tensor(SPECIALS))
    begins = ~special & (word_start[original] | torch.nn.functional.pad(special[:, :-1], (1, 0), value=True))
    word = torch.cumsum(begins.long(), 1)
    for i in range(len(data)):  # a word is chosen entirely or not at all; count in words
        ids, marks = word[i][~special[i]], chosen[i][~special[i]]
        chosen_words = set(ids[marks].tolist())
        assert all(marks[ids == w].all() for w in chosen_words)
        assert len(chosen_words) == expected_count(torch.tensor(int(begins[i].sum())))
        new, new_word = b["input_ids"][i][chosen[i]], word[i][chosen[i]]
        for w in chosen_words:  # one 80/10/10 draw per word: all of its tokens become <mask>, or none
            assert (new[new_word == w] == MASK).all() or not (new[new_word == w] == MASK).any()


def test_bad_spans_name_the_row():
    data = rows(3, seed=5)
    data[1]["entity_spans"] = [[3, 500]]
    data[1]["entity_ids"] = [5]
    with pytest.raises(ValueError, match=r"row 1 \(page_id=1\)"):
        collator()(data, generator=0)
    with pytest.raises(ValueError, match="whole_word=True needs word_start"):
        collator(whole_word=True)


def test_unpadding_indices_and_entity_buckets():
    from pretrain.masking import bucket_by_entities
    from pretrain.metrics import token_counts

    data = rows(32, seed=6)
    b = collator()(data, generator=0)
    length, num_entities = b["input_ids"].shape[1], b["entity_ids"].shape[1]
    assert torch.equal(b["word_tokens"], torch.cat([i * length + torch.arange(len(r["word_ids"]))
                                                    for i, r in enumerate(data)]))
    assert torch.equal(b["entity_tokens"], torch.cat([i * num_entities + torch.arange(len(r["entity_ids"]))
                                                      for i, r in enumerate(data)]))
    counts = token_counts(b)
    assert counts == {"words": sum(len(r["word_ids"]) for r in data),
                      "entities": sum(len(r["entity_ids"]) for r in data),
                      "padded": 32 * (b["input_ids"].shape[1] + b["entity_ids"].shape[1])}

    groups = bucket_by_entities(data, 8)
    assert sorted(i for g in groups for i in g) == list(range(32)) and [len(g) for g in groups] == [8] * 4
    entity_counts = [[len(data[i]["entity_ids"]) for i in g] for g in groups]
    assert all(max(a) <= min(b) for a, b in zip(entity_counts, entity_counts[1:]))  # sorted across groups
    padded = lambda groups: sum(collator()([data[i] for i in g], generator=0)["entity_ids"].numel() for g in groups)
    assert padded(groups) < padded([list(range(i, i + 8)) for i in range(0, 32, 8)])
    assert bucket_by_entities([{"entity_ids": [1, 2], "word_ids": [0, 5, 2]}, {"entity_ids": [], "word_ids": [0, 2]},
                               {"entity_ids": [3], "word_ids": [0, 2]}], 2) == [[1, 2], [0]]
