"""The pretraining loader: language-smoothed sampling, rank sharding, exact resume, data checks."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from pretrain_fixture import SIZES, pretrain_data  # noqa: F401  (fixture)

from pretrain.data import DataError, LanguageSampler, PretrainingData, TrainLoader, eval_batches


@pytest.fixture(scope="module")
def data(pretrain_data):  # noqa: F811
    return PretrainingData(pretrain_data, eval_examples=4)


@pytest.fixture(scope="module")
def collate(pretrain_data):  # noqa: F811
    from transformers import AutoTokenizer

    from pretrain.masking import MaskingCollator

    collator = MaskingCollator.from_tokenizer(AutoTokenizer.from_pretrained(str(pretrain_data / "tokenizer")))
    return lambda rows, seed: collator(rows, generator=seed)


def loader(data, collate, rank=0, world=1, seed=3, per_batch=False, prefetch=2):
    return TrainLoader(data, collate, micro_batch_size=2, rank=rank, world_size=world, seed=seed, alpha=0.7,
                       prefetch=prefetch, per_batch=per_batch)


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a, b):
    return all(torch.equal(x[0][k], y[0][k]) for x, y in zip(a, b) for k in x[0]) and [x[1] for x in a] == [
        y[1] for y in b]


def test_language_probabilities_follow_smoothed_sizes():
    sizes = {"en": 9000, "de": 1000, "sw": 100}
    sampler = LanguageSampler(sizes, alpha=0.7, seed=0)
    counts = Counter(lang for lang, _ in sampler.draw(20000))
    weights = {l: n ** 0.7 for l, n in sizes.items()}
    for lang in sizes:
        expected = weights[lang] / sum(weights.values())
        assert abs(counts[lang] / 20000 - expected) < 0.015, (lang, counts)


def test_each_language_epoch_visits_every_example_once():
    sampler = LanguageSampler({"en": 7, "de": 3}, alpha=1.0, seed=1)
    draws = sampler.draw(1000)
    en = [i for l, i in draws if l == "en"]
    for e in range(len(en) // 7):
        assert sorted(en[7 * e:7 * e + 7]) == list(range(7))
    assert sampler.state_dict()["epochs"]["en"] == len(en) // 7


def test_sampler_is_deterministic_per_seed():
    a = LanguageSampler({"en": 50, "de": 20}, 0.7, seed=5).draw(100)
    b = LanguageSampler({"en": 50, "de": 20}, 0.7, seed=5).draw(100)
    c = LanguageSampler({"en": 50, "de": 20}, 0.7, seed=6).draw(100)
    assert a == b and a != c


def test_per_batch_sampling_keeps_one_language_per_micro_batch(data, collate):
    it = iter(loader(data, collate, per_batch=True))
    for batch, langs in take(it, 10):
        assert len(set(langs)) == 1 and batch["input_ids"].shape[0] == 2


@pytest.mark.parametrize("per_batch", [False, True])
def test_ranks_read_different_examples(data, per_batch):
    """Rank r's micro-batch k holds slice r of global micro-batch k: ranks never share an example, and
    together they read exactly what one rank reads alone."""
    def examples(rank, world, n):  # (language, page id) of the first n micro-batches' examples
        identify = lambda rows, seed: torch.tensor([r["page_id"] for r in rows])  # noqa: E731
        it = iter(loader(data, identify, rank=rank, world=world, per_batch=per_batch))
        return [[(lang, int(p)) for lang, p in zip(langs, pages)] for pages, langs in take(it, n)]

    alone = [e for batch in examples(0, 1, 8) for e in batch]
    rank0, rank1 = examples(0, 2, 4), examples(1, 2, 4)
    together = [e for b0, b1 in zip(rank0, rank1) for e in b0 + b1]
    assert together == alone and len(set(alone)) == len(alone) == 16
    assert not {e for b in rank0 for e in b} & {e for b in rank1 for e in b}


def test_held_out_examples_are_never_trained_on(data):
    assert data.num_eval == {"en": 4, "de": 4}
    assert data.num_train == {l: n - 4 for l, n in SIZES.items()}
    draws = LanguageSampler(data.num_train, 0.7, 0).draw(500)
    for lang in SIZES:
        assert max(i for l, i in draws if l == lang) == data.num_train[lang] - 1


@pytest.mark.parametrize("per_batch", [False, True])
def test_resume_continues_with_identical_batches(data, collate, per_batch):
    first = loader(data, collate, per_batch=per_batch, prefetch=4)
    it = iter(first)
    take(it, 5)
    state = json.loads(json.dumps(first.state_dict()))  # as written into the checkpoint
    expected = take(it, 6)
    resumed = loader(data, collate, per_batch=per_batch)
    resumed.load_state_dict(state)
    assert same(take(iter(resumed), 6), expected)
    assert state["position"] == (5 if per_batch else 10)


def test_resume_on_another_world_size_continues_the_stream_and_refuses_other_data(data, collate,
                                                                                  pretrain_data):  # noqa: F811
    src = loader(data, collate, world=2)
    take(iter(src), 2)  # two global micro-batches of 2 ranks x 2 examples: 8 draws
    state = src.state_dict()
    assert state["position"] == 8
    one = loader(data, collate, world=1)
    one.load_state_dict(state)
    alone = iter(loader(data, collate, world=1))
    take(alone, 4)  # the same 8 draws, read by one rank
    assert same(take(iter(one), 3), take(alone, 3))
    other = PretrainingData(pretrain_data, eval_examples=3)
    with pytest.raises(DataError, match="training data changed"):
        loader(other, collate, world=2).load_state_dict(state)


def test_eval_batches_same_count_on_every_rank(data, collate):
    per_rank = [list(eval_batches(data, collate, 3, r, 3, seed=0)) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    real = Counter(lang for b in per_rank for lang, _, is_real in b if is_real)
    assert real == {"en": 2, "de": 2}  # 4 held-out examples per language in batches of 3
    again = list(eval_batches(data, collate, 3, 0, 3, seed=0))
    assert all(torch.equal(a[1]["input_ids"], b[1]["input_ids"]) for a, b in zip(per_rank[0], again))


def test_missing_language_and_metadata_errors_name_the_file(pretrain_data, tmp_path):  # noqa: F811
    with pytest.raises(DataError, match="metadata.json"):
        PretrainingData(pretrain_data, languages=["en", "xx"])
    with pytest.raises(DataError, match=str(tmp_path / "dataset" / "metadata.json")):
        PretrainingData(tmp_path)


def test_model_must_fit_the_data(pretrain_data):  # noqa: F811
    from transformers import LukeConfig

    from preprocessing.contract import DatasetMetadata
    from pretrain.data import check_fits as check_compatibility

    meta = DatasetMetadata.read(pretrain_data)
    ok = LukeConfig(vocab_size=meta.tokenizer_vocab_size, entity_vocab_size=meta.entity_vocab_size + 1)
    check_compatibility(meta, ok, pretrain_data)
    with pytest.raises(DataError, match="entity vocabulary has 17 ids but the model's entity table has 99"):
        check_compatibility(meta, LukeConfig(vocab_size=ok.vocab_size, entity_vocab_size=99), pretrain_data)
    with pytest.raises(DataError, match="tokenizer has .* ids but the model's word table has 5"):
        check_compatibility(meta, LukeConfig(vocab_size=5, entity_vocab_size=ok.entity_vocab_size), pretrain_data)
    ok.entity_vocab_sha256 = "0" * 64
    with pytest.raises(DataError, match="entity_vocab_sha256 differs"):
        check_compatibility(meta, ok, pretrain_data)


def test_mix_is_stable():
    from pretrain.data import _mix

    assert _mix(1, 2, 3) == _mix(1, 2, 3) != _mix(1, 2, 4)
    assert isinstance(_mix(2**40, 5), int) and 0 <= _mix(2**40, 5) < 2**63


def test_prefetch_errors_reach_the_consumer_and_closing_never_waits(data, collate):
    import time

    def failing(after):
        calls = []

        def f(rows, seed):
            calls.append(1)
            if len(calls) > after:
                raise ValueError("bad row in collate")
            return collate(rows, seed)
        return f

    it = iter(loader(data, failing(2), prefetch=1))
    next(it)
    with pytest.raises(ValueError, match="bad row in collate"):
        take(it, 3)
    # The thread fails while the queue is full and the trainer stops reading: closing must not wait for it.
    it = iter(loader(data, failing(2), prefetch=1))
    next(it)
    time.sleep(0.5)  # one batch queued, the error pending behind it
    start = time.perf_counter()
    it.close()
    assert time.perf_counter() - start < 5
