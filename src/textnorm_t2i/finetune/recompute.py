"""Gradient checkpointing of one UNet call: the forward without autograd, recomputed with it in the backward pass.

``torch.utils.checkpoint`` (non-reentrant) runs the forward with autograd on and drops each saved tensor through a
pair of hooks: for a small UNet that is hundreds of hook calls per call and a forward that builds a graph only to
discard it. Here the first forward runs without autograd (so the lean UNet path updates activations in place)
and the backward pass reruns it with autograd and differentiates that; the trainable parameters are passed in so
that the output needs a gradient even when the sample does not (the first step with a graph). The two forwards
run the same arithmetic, so the recomputed output equals the one returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn: Callable, n_args: int, *tensors: torch.Tensor) -> torch.Tensor:  # autograd is off here
        ctx.fn, ctx.n_args = fn, n_args
        ctx.params = tensors[n_args:]
        ctx.save_for_backward(*tensors[:n_args])
        return fn(*tensors[:n_args])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        need = ctx.needs_input_grad[2:]
        args = [a.detach().requires_grad_(bool(n)) if a.is_floating_point() else a
                for a, n in zip(ctx.saved_tensors, need)]
        with torch.enable_grad():
            out = ctx.fn(*args)
        wrt = [a for a, n in zip(args, need) if n] + [p for p, n in zip(ctx.params, need[ctx.n_args:]) if n]
        grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        return (None, None, *(next(grads) if n else None for n in need))


def recompute(fn: Callable[..., torch.Tensor], args: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
              ) -> torch.Tensor:
    """``fn(*args)``, its activations recomputed in the backward pass; gradients reach ``args`` and ``params``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor(2.0))
        >>> x = torch.tensor(3.0)
        >>> y = recompute(lambda a: (w * a) ** 2, [x], [w])
        >>> y.backward(); float(w.grad)
        36.0
    """
    return _Recompute.apply(fn, len(args), *args, *params)
