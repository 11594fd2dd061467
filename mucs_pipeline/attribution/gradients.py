"""Per-sample gradients (torch.func) and their random projection, for D-TRAK, DAS and AbU."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from torch.func import functional_call, grad, vmap

from mucs_pipeline.attribution.base import select_parameters

# objective(model, x, cond, sigma, noise) -> scalar, for ONE item x (C, H, W) evaluated at
# its J draws sigma (J,), noise (J, C, H, W); `model` is called like the network.
Objective = Callable[..., torch.Tensor]


class PerSampleGradients:
    """Flattened gradients of an objective per training item, for the selected parameters."""

    def __init__(self, net: torch.nn.Module, patterns: list[str], device: torch.device):
        self.net = net.to(device).eval()
        self.device = device
        self.names = select_parameters(net, patterns)
        state = {n: p.detach() for n, p in net.named_parameters()}
        self.params = {n: state.pop(n) for n in self.names}
        self.frozen = {**state, **{n: b.detach() for n, b in net.named_buffers()}}
        self.dim = sum(p.numel() for p in self.params.values())

    def _call(self, objective: Objective, params, x, cond, sigma, noise) -> torch.Tensor:
        """objective at one item x (C, H, W) and its draws, through the network with `params`."""
        state = {**self.frozen, **params}

        def model(*args):
            return functional_call(self.net, state, args)

        j = sigma.shape[0]
        c = None if cond is None else cond[None].expand(j, -1)
        return objective(model, x[None].expand(j, *x.shape), c, sigma, noise)

    def _flat(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """{name: (B, *shape)} -> (B, dim), in parameter order."""
        return torch.cat([grads[n].reshape(grads[n].shape[0], -1) for n in self.names], dim=1)

    def _run(self, fn, x, cond, sigma, noise, chunk) -> Iterator[torch.Tensor]:
        """vmap `fn(params, x, cond, sigma, noise)` over chunks of items."""
        shared = sigma.ndim == 1
        draws = None if shared else 0
        fn = vmap(fn, in_dims=(None, 0, None if cond is None else 0, draws, draws))
        dev = self.device
        for s in range(0, len(x), chunk):
            sl = slice(s, s + chunk)
            with warnings.catch_warnings():
                # vmap has no batching rule for CPU flash attention and loops over the items
                # for that op: exact results, and a warning per chunk that says only that.
                warnings.filterwarnings("ignore", message="There is a performance drop")
                grads = fn(
                    self.params,
                    x[sl].to(dev),
                    None if cond is None else cond[sl].to(dev),
                    (sigma if shared else sigma[sl]).to(dev),
                    (noise if shared else noise[sl]).to(dev),
                )
            yield grads

    def __call__(
        self,
        objective: Objective,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        chunk: int,
    ) -> Iterator[torch.Tensor]:
        """Yield (<= chunk, dim) gradients of the scalar objective for items x (N, C, H, W).

        Draws are shared by every item (sigma (J,), noise (J, C, H, W)) or per item
        (sigma (N, J), noise (N, J, C, H, W)).
        """
        g = grad(lambda params, *a: self._call(objective, params, *a))
        for grads in self._run(g, x, cond, sigma, noise, chunk):
            yield self._flat(grads)

    def normalized_mean(
        self,
        objective: Objective,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        chunk: int,
    ) -> Iterator[torch.Tensor]:
        """Per item: the gradient of each draw's objective (one value per draw), normalised to
        unit L2 norm, averaged over the draws. Shared draws only."""

        def one_draw(params, x, cond, s, n):
            return self._call(objective, params, x, cond, s[None], n[None]).sum()

        per_draw = vmap(grad(one_draw), in_dims=(None, None, None, 0, 0))

        def item(params, x, cond, sigma, noise):
            flat = self._flat(per_draw(params, x, cond, sigma, noise))  # (J, dim)
            return (flat / (flat.norm(dim=1, keepdim=True) + 1e-8)).mean(dim=0)

        yield from self._run(item, x, cond, sigma, noise, chunk)


class Projector:
    """A seeded random projection of gradients to `proj_dim` dimensions (None: identity).

    Uses the TRAK package's block-wise projector, which regenerates its matrix block by
    block from seeds instead of holding a (dim x proj_dim) matrix; the block size is set so
    one block holds at most `block_entries` numbers.
    """

    def __init__(
        self,
        dim: int,
        proj_dim: int | None,
        seed: int,
        kind: str,
        device: torch.device,
        block_entries: int = 1 << 27,
    ):
        self.proj = None
        self.out_dim = dim
        if proj_dim is not None:
            from trak.projectors import BasicProjector, ProjectionType

            block = max(1, min(proj_dim, block_entries // dim))
            self.proj = BasicProjector(
                grad_dim=dim,
                proj_dim=proj_dim,
                seed=seed % (2**31),
                proj_type=ProjectionType(kind),
                device=device,
                block_size=block,
            )
            self.out_dim = proj_dim

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return grads
        return self.proj.project(grads, model_id=0)
