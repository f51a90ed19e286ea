"""pretrain/fused_head.py against the unfused computation (full logits, fp32 cross-entropy): values, gradients,
FLOPs, and that no tensor as large as the full logits is ever made."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from pretrain.fused_head import linear_cross_entropy

N, D, V = 37, 16, 203  # 203 = 192 + a tail of 11 when split at a multiple of 64


def inputs(seed=0, bias=True, n=N):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, requires_grad=True)
    weight = torch.randn(V, D, generator=g, requires_grad=True)
    b = torch.randn(V, generator=g, requires_grad=True) if bias else None
    labels = torch.randint(0, V, (n,), generator=g)
    if n:
        labels[:4] = torch.tensor([V - 1, V - 5, 192, 191])  # on both sides of the split
    with torch.no_grad():  # some rows whose label scores highest, so that accuracy is not trivially 0
        logits = F.linear(x, weight, b)
        labels[4:n // 2] = logits[4:n // 2].argmax(1)
    return x, weight, b, labels


def unfused(x, weight, b, labels):
    logits = F.linear(x, weight, b).float()
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.gather(1, labels[:, None]).squeeze(1) >= logits.amax(1)).sum().float()
    return loss, correct


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("chunk_elements", [None, 5 * V, V])  # one chunk; 8 chunks of 5 rows (last: 2); rows one by one
def test_values_and_gradients_equal_the_unfused_head(bias, align, chunk_elements):
    x, weight, b, labels = inputs(bias=bias)
    ref_loss, ref_correct = unfused(x, weight, b, labels)
    (ref_loss * 0.37).backward()  # any incoming gradient, not just 1
    ref_grads = [t.grad.clone() for t in (x, weight, b) if t is not None]
    for t in (x, weight, b):
        if t is not None:
            t.grad = None
    loss, correct = linear_cross_entropy(x, weight, b, labels, align=align, chunk_elements=chunk_elements)
    assert 0 < ref_correct < N and correct.dtype == torch.float32 and not correct.requires_grad
    assert correct == ref_correct
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=1e-6)
    (loss * 0.37).backward()
    for t, ref in zip([t for t in (x, weight, b) if t is not None], ref_grads):
        torch.testing.assert_close(t.grad, ref, atol=1e-6, rtol=1e-5)


def test_frozen_weight_no_grad_mode_and_no_rows():
    x, weight, b, labels = inputs()
    ref_loss, ref_correct = unfused(x, weight, b, labels)
    weight.requires_grad_(False)
    b.requires_grad_(False)
    loss, correct = linear_cross_entropy(x, weight, b, labels, chunk_elements=3 * V)
    loss.backward()
    assert weight.grad is None and b.grad is None and x.grad is not None
    with torch.no_grad():
        loss2, correct2 = linear_cross_entropy(x, weight, b, labels, chunk_elements=3 * V)
    assert not loss2.requires_grad and torch.equal(loss2, loss) and correct2 == correct == ref_correct
    # no rows (a batch with nothing masked): zero loss, and zero (not missing) gradients
    x, weight, b, labels = inputs(n=0)
    loss, correct = linear_cross_entropy(x, weight, b, labels)
    loss.backward()
    assert loss == 0 and correct == 0
    assert torch.equal(weight.grad, torch.zeros_like(weight)) and torch.equal(b.grad, torch.zeros_like(b))


def test_bfloat16_close_to_fp32():
    x, weight, b, labels = inputs()
    ref_loss, _ = unfused(x, weight, b, labels)
    ref_loss.backward()
    half = [t.detach().bfloat16().requires_grad_() for t in (x, weight, b)]
    loss, _ = linear_cross_entropy(*half, labels, align=True, chunk_elements=7 * V)
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - ref_loss.item()) < 0.01 * ref_loss.item()
    for t, ref in zip(half, (x, weight, b)):
        assert t.grad.dtype == torch.bfloat16
        assert torch.cosine_similarity(t.grad.float().flatten(), ref.grad.flatten(), dim=0) > 0.999


def test_flops_equal_the_unfused_head_and_no_full_logits():
    """Chunking recomputes nothing: the FLOPs torch counts are the unfused head's. And no tensor made on the
    way holds rows x vocabulary values, as the unfused logits do."""

    class Sizes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and D not in t.shape:  # not the weight, its gradient or slices
                    self.largest = max(self.largest, t.numel())
            return out

    n = 64  # rows x V > V x D
    counts, largest = [], []
    for fused in (False, True):
        x, weight, b, labels = inputs(n=n)
        with FlopCounterMode(display=False) as counter, Sizes() as sizes:
            if fused:
                loss, _ = linear_cross_entropy(x, weight, b, labels, align=True, chunk_elements=10 * V)
            else:
                loss, _ = unfused(x, weight, b, labels)
            loss.backward()
        counts.append(counter.get_total_flops())
        largest.append(sizes.largest)
    assert counts[0] == counts[1] == 6 * n * D * V
    assert largest[0] >= n * V and largest[1] <= 10 * V


def test_autocast_runs_the_products_in_its_dtype_and_copies_the_table_once():
    """Under autocast (the trainer's mixed precision: fp32 weights) the products run in bf16 as F.linear's would,
    the table is cast once per call (not once per chunk), and gradients come back in fp32."""

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.products, self.table_copies = [], 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
                self.products.append({t.dtype for t in args if isinstance(t, torch.Tensor) and t.dim() == 2})
            if func._overloadpacket is torch.ops.aten._to_copy and out.shape == (V, D):
                self.table_copies += 1
            return out

    x, weight, b, labels = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss, ref_correct = unfused(x, weight, b, labels)
    ref_loss.backward()
    ref_grads = [t.grad.clone() for t in (x, weight, b)]
    for t in (x, weight, b):
        t.grad = None
    with Ops() as ops, torch.autocast("cpu", dtype=torch.bfloat16):
        loss, correct = linear_cross_entropy(x, weight, b, labels, align=True, chunk_elements=8 * V)
        loss.backward()
    assert len(ops.products) == 5 * 2 * 3  # 5 chunks of 8 rows, 2 pieces, forward + 2 gradients
    assert all(dtypes == {torch.bfloat16} for dtypes in ops.products) and ops.table_copies == 1
    assert abs(loss.item() - ref_loss.item()) < 1e-2 * ref_loss.item() and abs(correct - ref_correct) <= 1
    for t, ref in zip((x, weight, b), ref_grads):
        assert t.grad.dtype == torch.float32
        assert torch.cosine_similarity(t.grad.flatten(), ref.flatten(), dim=0) > 0.999
