"""MLukeForPretraining against transformers.LukeForMaskedLM on the same weights, plus masking invariants
that matter to the model (padding, heads only at masked positions)."""

import math

import pytest
import torch
from transformers import LukeConfig, LukeForMaskedLM

from pretrain.masking import MaskingCollator, hf_inputs
from pretrain.model import MLukeForPretraining

VOCAB, ENTITIES, MASK_ID = 120, 60, 119


def tiny_config(entity_aware: bool = False, **kw) -> LukeConfig:
    return LukeConfig(
        vocab_size=VOCAB, entity_vocab_size=ENTITIES, hidden_size=32, entity_emb_size=16, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=66, type_vocab_size=1,
        layer_norm_eps=1e-5, use_entity_aware_attention=entity_aware, **kw,
    )


def make_rows(seed: int, n: int = 4, max_len: int = 40) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(8, max_len, (1,), generator=g))
        words = [0] + torch.randint(4, MASK_ID, (length - 2,), generator=g).tolist() + [2]
        num_entities = int(torch.randint(0 if i == 1 else 1, 6, (1,), generator=g))  # row 1 may have none
        starts = torch.randint(1, length - 4, (num_entities,), generator=g)
        widths = torch.randint(1, 4, (num_entities,), generator=g)
        spans = [[int(s), int(s + w)] for s, w in zip(starts, widths)]
        entities = torch.randint(3, ENTITIES, (num_entities,), generator=g).tolist()
        rows.append({"word_ids": words, "entity_ids": entities, "entity_spans": spans})
    return rows


def collate(rows, seed=0):
    return MaskingCollator(VOCAB, MASK_ID, [0, 1, 2, 3], max_mention_length=3)(rows, generator=seed)


def pair(config, seed=0):
    torch.manual_seed(seed)
    ours = MLukeForPretraining(config).eval()
    hf = LukeForMaskedLM(config).eval()
    hf.load_state_dict(ours.state_dict(), strict=True)
    return ours, hf


def test_state_dict_matches_hf_both_ways():
    config = tiny_config(entity_aware=True)
    ours = MLukeForPretraining(config)
    hf = LukeForMaskedLM(config)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in hf.state_dict().items()}
    hf.load_state_dict(ours.state_dict(), strict=True)
    for k, v in hf.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    # HF -> ours: HF does not tie lm_head.decoder.weight, ours does; make them agree first
    hf2 = LukeForMaskedLM(config)
    with torch.no_grad():
        hf2.lm_head.decoder.weight.copy_(hf2.luke.embeddings.word_embeddings.weight)
    ours.load_state_dict(hf2.state_dict(), strict=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, hf2.state_dict()[k]), k
    assert ours.lm_head.decoder.weight is ours.luke.embeddings.word_embeddings.weight
    assert ours.entity_predictions.decoder.weight is ours.luke.entity_embeddings.entity_embeddings.weight


@pytest.mark.parametrize("entity_aware", [False, True])
def test_equal_to_hf_on_padded_batch(entity_aware):
    ours, hf = pair(tiny_config(entity_aware))
    if entity_aware:  # distinct entity-aware queries, so a wrong pairing would show
        with torch.no_grad():
            for layer in ours.luke.encoder.layer:
                for q in (layer.attention.self.w2e_query, layer.attention.self.e2w_query, layer.attention.self.e2e_query):
                    q.weight.normal_(0, 0.5)
        hf.load_state_dict(ours.state_dict(), strict=True)
    batch = collate(make_rows(1))
    assert (batch["attention_mask"] == 0).any() and (batch["entity_attention_mask"] == 0).any()
    with torch.no_grad():
        out = ours(batch)
        word_logits, entity_logits = ours.masked_logits(batch)
        ref = hf(**hf_inputs(batch))
    hf_word = ref.logits.view(-1, VOCAB)[batch["mlm_positions"]]
    hf_entity = ref.entity_logits.view(-1, ENTITIES)[batch["mep_positions"]]
    torch.testing.assert_close(word_logits, hf_word, atol=1e-5, rtol=0)
    torch.testing.assert_close(entity_logits, hf_entity, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss_mlm, ref.mlm_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss_mep, ref.mep_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    assert out.num_mlm == len(batch["mlm_labels"]) and out.num_mep == len(batch["mep_labels"])
    assert out.acc_mlm == (hf_word.argmax(-1) == batch["mlm_labels"]).float().mean()
    assert out.acc_mep == (hf_entity.argmax(-1) == batch["mep_labels"]).float().mean()
    # hidden states at real (non-padding) positions
    words, entities = ours.encode(**batch)
    hf_base = hf.luke(**{k: v for k, v in hf_inputs(batch).items() if "labels" not in k})
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(words[real], hf_base.last_hidden_state[real], atol=1e-5, rtol=0)
    real_e = batch["entity_attention_mask"].bool()
    torch.testing.assert_close(entities[real_e], hf_base.entity_last_hidden_state[real_e], atol=1e-5, rtol=0)


def test_padding_does_not_change_outputs():
    ours, _ = pair(tiny_config())
    rows = make_rows(2)
    batch = collate(rows)
    alone = MaskingCollator(VOCAB, MASK_ID, [0, 1, 2, 3], max_mention_length=3, pad_to_multiple_of=1)
    with torch.no_grad():
        words, entities = ours.encode(**batch)
        for i, row in enumerate(rows):
            single = alone([row], generator=0)
            # same masked inputs as in the batch, unpadded
            single["input_ids"][0] = batch["input_ids"][i, : len(row["word_ids"])]
            single["entity_ids"][0] = batch["entity_ids"][i, : len(row["entity_ids"])]
            w, e = ours.encode(**single)
            torch.testing.assert_close(w[0], words[i, : len(row["word_ids"])], atol=1e-5, rtol=0)
            if row["entity_ids"]:
                torch.testing.assert_close(e[0], entities[i, : len(row["entity_ids"])], atol=1e-5, rtol=0)


def test_word_only_batch_and_no_masked_entities():
    ours, hf = pair(tiny_config())
    rows = [{"word_ids": [0, 5, 6, 7, 8, 2], "entity_ids": [], "entity_spans": []}]
    batch = collate(rows)
    assert batch["entity_ids"].shape == (1, 0) and len(batch["mep_labels"]) == 0
    out = ours(batch)
    assert out.num_mep == 0 and out.loss_mep == 0 and torch.isfinite(out.loss)
    with torch.no_grad():
        ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=hf_inputs(batch)["labels"])
    torch.testing.assert_close(out.loss_mlm.detach(), ref.mlm_loss, atol=1e-5, rtol=0)


def test_gradients_match_hf_and_checkpointing(monkeypatch):
    import pretrain.model

    config = tiny_config()
    ours, hf = pair(config)
    batch = collate(make_rows(3))
    ours(batch).loss.backward()
    hf(**hf_inputs(batch)).loss.backward()
    hf_grads = dict(hf.named_parameters())
    # lm_head.decoder.weight is tied to the word embeddings in ours: its gradient is the sum of both
    expected_word = hf_grads["luke.embeddings.word_embeddings.weight"].grad + hf_grads["lm_head.decoder.weight"].grad
    trained = []
    for name, p in ours.named_parameters():
        if name.startswith("luke.pooler"):
            assert p.grad is None and not p.requires_grad
            continue
        expected = expected_word if name == "luke.embeddings.word_embeddings.weight" else hf_grads[name].grad
        assert p.grad is not None and expected is not None, name
        torch.testing.assert_close(p.grad, expected, atol=1e-5, rtol=1e-4, msg=name)
        trained.append(name)
    assert len(trained) == len(list(ours.parameters())) - 2  # every parameter but the pooler's two

    calls = []
    original = pretrain.model.checkpoint
    monkeypatch.setattr(pretrain.model, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    config.gradient_checkpointing = True
    ckpt = MLukeForPretraining(config).eval()
    ckpt.load_state_dict(ours.state_dict())
    ckpt.train()  # checkpointing only in training; dropout off to compare
    for m in ckpt.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for layer in ckpt.luke.encoder.layer:
        layer.attention.self.dropout_p = 0.0
    ckpt(batch).loss.backward()
    assert len(calls) == config.num_hidden_layers  # one checkpointed call per layer
    grads = dict(ours.named_parameters())
    for name in trained:
        p = dict(ckpt.named_parameters())[name]
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_fp32(dtype):
    # Weights moved away from the initialization, so that logits, losses and gradients are far from the
    # trivial values any broken path would also give (a loss near ln V, logits near 0).
    ours, _ = pair(tiny_config())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    batch = collate(make_rows(4))
    ref = ours(batch)
    ref.loss.backward()
    ref_grads = torch.cat([p.grad.flatten() for p in ours.parameters() if p.grad is not None])
    with torch.no_grad():
        ref_words, ref_entities = ours.masked_logits(batch)
    half_model = MLukeForPretraining(tiny_config()).eval()
    half_model.load_state_dict(ours.state_dict())
    half_model.to(dtype)
    half = half_model(batch)
    half.loss.backward()
    chance = math.log(VOCAB) + math.log(ENTITIES)
    assert half.loss.dtype == torch.float32 and abs(ref.loss.item() - chance) > 0.1  # uniform logits: chance
    assert abs(half.loss.item() - ref.loss.item()) < 0.02 * ref.loss.item()
    with torch.no_grad():
        words, entities = half_model.masked_logits(batch)
    for got, want in ((words, ref_words), (entities, ref_entities)):
        assert (got.float() - want).abs().max() < 0.03 * want.abs().max()
        assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.9
    grads = torch.cat([p.grad.float().flatten() for p in half_model.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all() and torch.cosine_similarity(grads, ref_grads, dim=0) > 0.99


def test_padded_vocabulary_path_is_exact(monkeypatch):
    """GPUs pad the decoders' output width to a multiple of 8 (VocabDecoder); force it here on the CPU."""
    from pretrain.model import VocabDecoder

    config = tiny_config()
    config.vocab_size = VOCAB + 2  # 122 words and 60 entities: neither a multiple of 8
    ours, hf = pair(config)
    batch = collate(make_rows(5))
    plain = ours(batch)
    plain.loss.backward()
    grads = {n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None}
    ours.zero_grad()
    monkeypatch.setattr(VocabDecoder, "always_pad", True)
    padded = ours(batch)
    padded.loss.backward()
    for field in ("loss", "loss_mlm", "loss_mep", "acc_mlm", "acc_mep", "num_mlm", "num_mep"):
        torch.testing.assert_close(getattr(padded, field), getattr(plain, field), atol=1e-6, rtol=0)
    for n, p in ours.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5, msg=n)
    with torch.no_grad():
        word_logits, entity_logits = ours.masked_logits(batch)
        ref = hf(**hf_inputs(batch))
    assert word_logits.shape[1] == VOCAB + 2 and entity_logits.shape[1] == ENTITIES
    torch.testing.assert_close(word_logits, ref.logits.view(-1, VOCAB + 2)[batch["mlm_positions"]], atol=1e-5, rtol=0)
