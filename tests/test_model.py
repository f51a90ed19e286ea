"""MLukeForPretraining against transformers.LukeForMaskedLM on the same weights, plus masking invariants
that matter to the model (padding, heads only at masked positions)."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LukeConfig, LukeForMaskedLM

from pretrain.masking import MaskingCollator, hf_inputs
from pretrain.model import MLukeForPretraining, no_dropout

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
    no_dropout(ckpt).train()  # checkpointing only in training; dropout off to compare
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


# ---------------------------------------------------------------- fused heads, unpadded layout, entity-free
# batches, host synchronization


def step(model, batch):
    """Outputs and gradients of one forward + backward (gradients by name; None where there is none)."""
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.loss.backward()
    return out, {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def test_chunked_aligned_heads_equal_hf(monkeypatch):
    """Rows a few at a time and the vocabulary split at an aligned width (as on GPUs): losses, accuracies and
    gradients still equal transformers' full-logit heads."""
    import pretrain.fused_head
    from pretrain.model import VocabDecoder

    config = tiny_config()
    config.vocab_size = VOCAB + 2  # 122 = 64 + 58 words
    ours, hf = pair(config)
    monkeypatch.setattr(pretrain.fused_head, "CHUNK_ELEMENTS", 2 * (VOCAB + 2))  # 2 words, 4 entities per chunk
    monkeypatch.setattr(VocabDecoder, "always_pad", True)
    batch = collate(make_rows(6, n=8))
    assert len(batch["mlm_labels"]) > 4 and len(batch["mep_labels"]) > 4 and (batch["mlm_labels"] >= 64).any()
    out, grads = step(ours, batch)
    ref = hf(**hf_inputs(batch))
    ref.loss.backward()
    hf_word = ref.logits.view(-1, VOCAB + 2)[batch["mlm_positions"]]
    hf_entity = ref.entity_logits.view(-1, ENTITIES)[batch["mep_positions"]]
    torch.testing.assert_close(out.loss_mlm, ref.mlm_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss_mep, ref.mep_loss, atol=1e-5, rtol=0)
    assert out.acc_mlm == (hf_word.argmax(-1) == batch["mlm_labels"]).float().mean()
    assert out.acc_mep == (hf_entity.argmax(-1) == batch["mep_labels"]).float().mean()
    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    hf_grads["luke.embeddings.word_embeddings.weight"] = (hf_grads["luke.embeddings.word_embeddings.weight"]
                                                          + hf_grads["lm_head.decoder.weight"])
    for name, grad in grads.items():
        if not name.startswith("luke.pooler"):
            torch.testing.assert_close(grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def unpadded_pair(entity_aware=False):
    padded, _ = pair(tiny_config(entity_aware))
    if entity_aware:
        with torch.no_grad():
            for layer in padded.luke.encoder.layer:
                for q in (layer.attention.self.w2e_query, layer.attention.self.e2w_query, layer.attention.self.e2e_query):
                    q.weight.normal_(0, 0.5)
    unpadded = MLukeForPretraining(tiny_config(entity_aware)).eval()
    unpadded.load_state_dict(padded.state_dict())
    padded.unpad, unpadded.unpad = False, True
    return padded, unpadded


def assert_same_step(padded, unpadded, batch, checkpointing=False):
    """Same hidden states at real positions, losses, accuracies (eval) and gradients (train, no dropout)."""
    from pretrain.model import Packed

    real, real_e = batch["attention_mask"].bool(), batch["entity_attention_mask"].bool()
    with torch.no_grad():
        words, entities = padded.encode(**batch)
        unpadded_words, unpadded_entities = unpadded.encode(**batch)
        torch.testing.assert_close(unpadded_words[real], words[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(unpadded_entities[real_e], entities[real_e], atol=1e-5, rtol=0)
        assert (unpadded_words[~real] == 0).all() and (unpadded_entities[~real_e] == 0).all()
    for m in (padded, unpadded):
        no_dropout(m).train()
    unpadded.gradient_checkpointing = checkpointing
    (out, grads), (got, got_grads) = step(padded, batch), step(unpadded, batch)
    for field in ("loss", "loss_mlm", "loss_mep", "acc_mlm", "acc_mep", "num_mlm", "num_mep"):
        torch.testing.assert_close(getattr(got, field), getattr(out, field), atol=1e-6, rtol=0, msg=field)
    assert grads.keys() == got_grads.keys()
    for name, grad in grads.items():
        assert (grad is None) == (got_grads[name] is None), name
        if grad is not None:
            torch.testing.assert_close(got_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    layouts = []
    original = Packed.__init__
    Packed.__init__ = lambda self, *a: layouts.append(1) or original(self, *a)
    try:
        with torch.no_grad():
            unpadded(batch)
    finally:
        Packed.__init__ = original
    assert layouts == [1]  # the unpadded model did take the unpadded layout


@pytest.mark.parametrize("entity_aware", [False, True])
def test_unpadded_layout_equals_padded(entity_aware):
    padded, unpadded = unpadded_pair(entity_aware)
    batch = collate(make_rows(7, n=5))
    assert (batch["attention_mask"] == 0).any() and (batch["entity_attention_mask"] == 0).any()
    assert_same_step(padded, unpadded, batch, checkpointing=entity_aware)


def reference_flash(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p, is_causal, return_debug_mask, scale=None):
    """aten::_flash_attention_forward as documented (torch/nn/attention/varlen.py): attention within each
    sequence [cu[i], cu[i+1]) of the packed (T, heads, head_dim) tensors; here one SDPA per sequence."""
    assert cu_q is cu_k and cu_q.dtype == torch.int32 and max_q == max_k and not is_causal and not return_debug_mask
    bounds = cu_q.tolist()
    assert bounds[0] == 0 and bounds[-1] == q.size(0) and max(b - a for a, b in zip(bounds, bounds[1:])) <= max_q
    out = [F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), dropout_p=dropout_p,
                                          scale=scale).transpose(0, 1) for a, b in zip(bounds, bounds[1:])]
    return torch.cat(out), None, None, None, None


def test_unpadded_layout_with_flash_attention_semantics(monkeypatch):
    """The flash-attention branch of the unpadded layout (CUDA only) run here with a reference implementation
    of the op: the arguments it is given (sequence bounds, scale, layout) are the right ones."""
    import pretrain.model

    padded, unpadded = unpadded_pair()
    calls = []
    monkeypatch.setattr(pretrain.model, "flash_varlen_supported", lambda q, v: True)
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward",
                        lambda *a, **k: calls.append(1) or reference_flash(*a, **k))
    batch = collate(make_rows(8, n=5))
    assert_same_step(padded, unpadded, batch)
    assert calls


def test_flash_call_fits_the_real_op_on_the_meta_device():
    """Shapes, dtypes and the backward of the real aten op (no kernel runs: meta tensors)."""
    from pretrain.model import flash_varlen

    qkv = torch.randn(50, 3 * 4 * 16, device="meta", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = (t.unflatten(-1, (4, 16)) for t in qkv.split(64, dim=-1))
    cu_seqlens = torch.tensor([0, 20, 50], dtype=torch.int32, device="meta")
    out = flash_varlen(q, k, v, cu_seqlens, 40, 0.1, 0.25)
    assert out.shape == (50, 4, 16) and out.dtype == torch.bfloat16
    out.sum().backward()
    assert qkv.grad.shape == qkv.shape


@pytest.mark.parametrize("unpad", [False, True])
def test_entity_free_batch_gives_the_same_parameters_gradients(unpad):
    """ZeRO-3 gathers and reduces parameters as modules run: a micro-batch without entities must touch every
    parameter a micro-batch with entities touches (here: gets a gradient, zero on the entity side)."""
    ours, hf = pair(tiny_config())
    ours.unpad = unpad
    with_entities = collate(make_rows(9))
    rows = [{**r, "entity_ids": [], "entity_spans": []} for r in make_rows(9)]
    entity_free = collate(rows)
    assert entity_free["entity_ids"].shape == (4, 0) and len(with_entities["mep_labels"]) > 0
    _, grads = step(ours, with_entities)
    out, free_grads = step(ours, entity_free)
    trained = {n for n, g in grads.items() if g is not None}
    assert trained == {n for n, g in free_grads.items() if g is not None}
    assert len(trained) == len(list(ours.parameters())) - 2  # all but the frozen pooler
    for name in trained:
        if name.startswith(("luke.entity_embeddings.", "entity_predictions.")):
            assert not free_grads[name].any(), name
    assert out.num_mep == 0 and out.loss_mep == 0 and out.acc_mep == 0
    with torch.no_grad():
        ref = hf(input_ids=entity_free["input_ids"], attention_mask=entity_free["attention_mask"],
                 labels=hf_inputs(entity_free)["labels"])
    torch.testing.assert_close(out.loss.detach(), ref.mlm_loss, atol=1e-5, rtol=0)


class HostReads:
    """Every read of a tensor's value on the host: the Python-level calls (Tensor.item, __bool__, tolist,
    __int__, __float__) and, below them, any aten op whose result needs values on the host (on a GPU each
    waits for all queued work)."""

    METHODS = ("item", "__bool__", "tolist", "__int__", "__float__")
    OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "repeat_interleave")

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        self.reads = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, original))
        reads = self.reads

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func._overloadpacket.__name__ in HostReads.OPS:
                    reads.append(func._overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.mode = Ops()

    def _counted(self, name, original):
        def wrapped(tensor, *a, **k):
            if self.active:
                self.reads.append(name)
            return original(tensor, *a, **k)
        return wrapped

    active = False

    def __enter__(self):
        self.active = True
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        self.active = False


@pytest.mark.parametrize("case", ["padded", "unpadded", "entity_free", "checkpointing", "entity_aware"])
def test_forward_and_backward_read_nothing_on_the_host(case, monkeypatch):
    ours, _ = pair(tiny_config(entity_aware=case == "entity_aware"))
    ours.train()
    ours.unpad = case == "unpadded"
    ours.gradient_checkpointing = case == "checkpointing"
    rows = make_rows(10)
    if case == "entity_free":
        rows = [{**r, "entity_ids": [], "entity_spans": []} for r in rows]
    batch = collate(rows)
    with HostReads(monkeypatch) as host:
        out = ours(batch)
        (out.loss * 2).backward()
        assert out.acc_mlm.requires_grad is False
    assert host.reads == []
    with HostReads(monkeypatch) as host:  # the check itself sees reads
        bool(batch["attention_mask"].all())
        batch["attention_mask"].nonzero()
    assert host.reads == ["__bool__", "_local_scalar_dense", "nonzero"]


def test_batch_flops_count_the_unpadded_layouts_work(monkeypatch):
    """On a padded batch, the FLOPs torch counts in the unpadded layout (each example attends over its own
    length) are the trainer's count (pretrain/metrics.py batch_flops). Entity embeddings as wide as the hidden
    states: their projection would run on padding, before the layout is chosen."""
    from torch.utils.flop_counter import FlopCounterMode

    import pretrain.model
    from pretrain.metrics import batch_flops, token_counts

    config = tiny_config()
    config.entity_emb_size = config.hidden_size
    ours = MLukeForPretraining(config).train()
    ours.unpad = True
    monkeypatch.setattr(pretrain.model, "flash_varlen_supported", lambda q, v: True)
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", reference_flash)
    batch = collate(make_rows(11, n=5))
    counts = token_counts(batch)
    assert counts["padded"] > counts["words"] + counts["entities"]
    assert counts["words"] == len(batch["word_tokens"]) and counts["entities"] == len(batch["entity_tokens"])
    with FlopCounterMode(display=False) as counter:
        ours(batch).loss.backward()
    assert counter.get_total_flops() == batch_flops(config, batch)


def test_mixed_precision_takes_the_unpadded_layout_where_flash_attention_is(monkeypatch):
    """Under autocast (fp32 weights, bf16 products: the trainer's mixed precision) the model chooses the
    unpadded layout and flash attention by itself wherever they exist: here the CPU stands in for CUDA."""
    import pretrain.model
    from pretrain.model import Packed

    calls, layouts = [], []
    monkeypatch.setattr(pretrain.model, "FLASH_DEVICES", ("cpu",))
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward",
                        lambda q, *a, **k: calls.append(q.dtype) or reference_flash(q, *a, **k))
    original = Packed.__init__
    monkeypatch.setattr(Packed, "__init__", lambda self, *a: layouts.append(1) or original(self, *a))
    ours, _ = pair(tiny_config())
    no_dropout(ours).train()
    batch = collate(make_rows(12))
    ref, _ = step(ours, batch)  # fp32: the padded layout
    assert layouts == [] and calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = step(ours, batch)
    assert layouts == [1] and calls == [torch.bfloat16] * ours.config.num_hidden_layers
    assert abs(out.loss.item() - ref.loss.item()) < 0.02 * ref.loss.item()
    assert all(g is None or g.dtype == torch.float32 for g in grads.values())
