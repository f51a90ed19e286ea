"""Cross-entropy and accuracy of a linear projection onto a large vocabulary, without its full logits.

    loss_sum, correct = linear_cross_entropy(x, weight, bias, labels)

is, up to fp32 rounding, `F.cross_entropy(F.linear(x, weight, bias).float(), labels, reduction="sum")` and the
number of rows whose label scores highest, with the gradients of `loss_sum` for x, weight and bias. mLUKE's
heads project a few thousand masked positions onto 250,002 words and 1.2M entities: their logits, the fp32
log-softmax and its gradient are GBs per micro-batch. Here rows are taken a chunk at a time (at most
`CHUNK_ELEMENTS` logits): a chunk's logits give each row's maximum, label logit and log-sum-exp, and become
exp(logit - max) in place; when a gradient is needed, the chunk's share of every gradient follows at once from
softmax - one-hot = (exp - sum * one-hot) / sum, the division applied to the small operands of the products.
Nothing is recomputed (the FLOPs are those of the unfused head: forward, input and weight gradients,
6 * rows * in_features * vocab); `backward` only scales the stored gradients by the incoming one. The approach
of Liger-Kernel's fused linear cross-entropy, in plain torch operations.

A chunk's logits are held vocabulary-major, (vocab, rows) = weight @ x.T: on CPUs that product is ~1.5x
faster than x @ weight.T (MKL, one thread, 152 x 256 x 250,002: 0.52 vs 0.78 s). On GPUs every leading
dimension is kept a multiple of 8 (`align`): cuBLAS is much slower otherwise (H200, bf16, 1232 x 768 x V
fwd+bwd: 6.1 ms at V = 250,002, 2.3 ms at 250,008). So the vocabulary is split at a multiple of ALIGN
(250,002 = 249,984 + 18; slicing rows of the table copies nothing, where padding it would copy it every
step), chunks hold a multiple of 8 rows, and the last chunk is filled up to one with zero rows (whose logits
are never used). `align=True` does the same on the CPU (tests).
"""

from __future__ import annotations

from itertools import repeat

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 2**28  # logits per chunk: 1 GiB as fp32 (the unfused heads of a 32-sequence batch: ~5 GB)
ALIGN = 64
CPU_BLOCK = 1024  # vocabulary rows per block on CPUs (1024 x 154 fp32 logits: 0.6 MB)


@torch.compiler.disable  # a loop whose length depends on the number of masked tokens: keep it out of graphs
def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                         align: bool | None = None, chunk_elements: int | None = None,
                         row_losses: torch.Tensor | None = None):
    """(loss_sum, correct), fp32 0-dim tensors; only loss_sum is differentiable. x (N, D), weight (V, D),
    bias (V,) or None, labels (N,) in [0, V); `row_losses`, an fp32 (N,) tensor, receives each row's loss.
    `align` (default: on CUDA): see the module docstring.
    Under autocast the products run in autocast's dtype, as F.linear's would (the table cast once per call),
    and the gradients come in the inputs' dtypes, the weight's accumulated in it."""
    align = x.is_cuda if align is None else align
    vocab = weight.size(0)
    split = vocab - vocab % ALIGN if align else vocab
    pieces = [(0, split), (split, vocab)] if 0 < split < vocab else [(0, vocab)]
    rows = max(1, (chunk_elements or CHUNK_ELEMENTS) // vocab)
    if align:
        rows = max(8, rows - rows % 8)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    grad = torch.is_grad_enabled()
    needs = (grad and x.requires_grad, grad and weight.requires_grad, grad and bias is not None and bias.requires_grad)
    return _LinearCrossEntropy.apply(x, weight, bias, labels, pieces, rows, align, dtype, needs, row_losses)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, labels, pieces, rows, align, dtype, needs, row_losses):
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are chosen here
            grads = _forward(x, weight, bias, labels, pieces, rows, align, dtype, needs, row_losses)
        loss, correct, grad_x, grad_w, grad_b = grads
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        # One backward per forward, as in training: the stored gradients are scaled in place (a second backward
        # through a retained graph fails on autograd's check of modified saved tensors, not silently).
        grad_x, grad_w, grad_b = ctx.saved_tensors
        if grad_x is not None:
            grad_x = grad_x * grad_loss.to(grad_x.dtype)
        if grad_w is not None:  # the largest tensor here: no copy
            grad_w = grad_w.mul_(grad_loss.to(grad_w.dtype))
        if grad_b is not None:
            grad_b = grad_b.mul_(grad_loss.to(grad_b.dtype))
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


def _forward(x, weight, bias, labels, pieces, rows, align, dtype, needs, row_losses):
    need_x, need_w, need_b = needs
    loss = torch.zeros((), dtype=torch.float32, device=x.device)
    correct = torch.zeros((), dtype=torch.float32, device=x.device)
    table = weight.to(dtype)  # no copy without autocast
    # Every gradient element is written by a first product, then accumulated: no fill.
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = (torch.empty_like if x.size(0) else torch.zeros_like)(weight) if need_w else None
    grad_b = (torch.empty_like if x.size(0) else torch.zeros_like)(bias) if need_b else None
    for start in range(0, x.size(0), rows):
        xc, yc = x[start:start + rows].to(dtype), labels[start:start + rows]
        n = xc.size(0)
        if align and n % 8:  # zero rows up to a multiple of 8 (their columns are left out below)
            xc, yc = F.pad(xc, (0, 0, 0, -n % 8)), F.pad(yc, (0, -n % 8))
        columns = torch.arange(xc.size(0), device=x.device)
        # vocabulary-major logits (piece, rows), fp32 (a copy under bf16/fp16, the products themselves in fp32)
        logits = [torch.mm(table[a:b], xc.t()).float() for a, b in pieces]
        # Passes over the vocabulary in blocks that stay in cache on CPUs (amax over dim 0 of a whole chunk is
        # ~10x slower there); one block on GPUs. The bias is added in the first pass.
        blocks = []  # (block of logits, its bias)
        for (a, b), piece in zip(pieces, logits):
            size = piece.size(0) if x.is_cuda else CPU_BLOCK
            blocks += zip(piece.split(size), bias[a:b, None].split(size) if bias is not None else repeat(None))
        col_max = torch.stack([(block if block_bias is None else block.add_(block_bias)).amax(0)
                               for block, block_bias in blocks]).amax(0)
        label_logit = torch.zeros_like(col_max)
        label_index = []  # flat index of each column's label in its piece, and whether it is in that piece
        for (a, b), piece in zip(pieces, logits):
            inside = (yc >= a) & (yc < b)
            label_index.append(((yc - a).clamp(0, b - a - 1) * piece.size(1) + columns, inside))
            label_logit += piece.view(-1).index_select(0, label_index[-1][0]) * inside
        # exp(logits - max) in place, summed block by block: one pass, no other buffer
        sum_exp = sum(block.sub_(col_max).exp_().sum(0) for block, _ in blocks)
        row_loss = (sum_exp.log() + col_max - label_logit)[:n]
        loss += row_loss.sum()
        if row_losses is not None:
            row_losses[start:start + n] = row_loss
        correct += (label_logit >= col_max)[:n].sum()  # the label scores highest
        if not any(needs):
            continue
        # d loss / d logits = exp / sum_exp - one-hot = (exp - sum_exp * one-hot) / sum_exp: the one-hot part
        # goes into the exponentials (a few elements), the division into the small operands of the products.
        scale = 1.0 / sum_exp
        for i, ((a, b), probs, (index, inside)) in enumerate(zip(pieces, logits, label_index)):
            probs.view(-1).index_add_(0, index, -(sum_exp * inside))
            d = probs.to(dtype)
            if need_x:
                _accumulate(grad_x[start:start + n], d[:, :n].t(), table[a:b], first=i == 0)
            if need_w:  # the zero rows of xc add nothing
                _accumulate(grad_w[a:b], d, (xc * scale[:, None]).to(dtype), first=start == 0)
            if need_b:  # (a matrix-vector product: not counted as FLOPs, like the unfused head's sum)
                if start == 0:
                    grad_b[a:b] = probs[:, :n] @ scale[:n]
                else:
                    grad_b[a:b] += probs[:, :n] @ scale[:n]
        if need_x:
            grad_x[start:start + n] *= scale[:n, None]
    return loss, correct, grad_x, grad_w, grad_b


def _accumulate(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """out = a @ b (first) or out += a @ b, in out's dtype: through `out=` when the dtypes agree (not addmm_,
    which torch.utils.flop_counter does not count), else through a temporary."""
    if out.dtype == a.dtype:
        torch.addmm(out, a, b, beta=0 if first else 1, out=out)
    elif first:
        out.copy_(a @ b)
    else:
        out.add_(a @ b)
