"""DiT with a residual conv front end, register tokens and adaLN-Zero (paper App. A.3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mucs_pipeline.models.diffusion import condition_or_null, labels_or_unaugmented


class ConvBlock(nn.Module):
    """Residual conv block: kernel 5, same padding, instance norm, SiLU (transposed: decoder)."""

    def __init__(self, c_in: int, c_out: int, stride: int, transpose: bool):
        super().__init__()
        if transpose:
            extra = {"output_padding": stride - 1}
            self.conv1 = nn.ConvTranspose2d(c_in, c_out, 5, stride, padding=2, **extra)
            self.conv2 = nn.ConvTranspose2d(c_out, c_out, 5, 1, padding=2)
            skip = nn.ConvTranspose2d(c_in, c_out, 1, stride, output_padding=stride - 1)
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 5, stride, padding=2)
            self.conv2 = nn.Conv2d(c_out, c_out, 5, 1, padding=2)
            skip = nn.Conv2d(c_in, c_out, 1, stride)
        self.norm1 = nn.InstanceNorm2d(c_out, affine=True)
        self.norm2 = nn.InstanceNorm2d(c_out, affine=True)
        self.skip = skip if (c_in != c_out or stride != 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + self.skip(x))


def mlp2(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    """The two-layer SiLU MLP used for the sigma and the conditioning embeddings."""
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out)
    )


def sigma_features(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of c_noise = ln(sigma)/4, frequencies from 1 to 1000."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), half, device=c_noise.device))
    args = c_noise.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (N, dim)


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding, as in DiT/MAE: (grid*grid, dim)."""
    coords = torch.arange(grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]  # (T, dim/4)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (T, dim/2)

    return torch.cat([embed(gy), embed(gx)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention over tokens (fused scaled-dot-product kernel)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=p)  # (N, H, T, Dh)
        return self.proj(h.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, c_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )
        self.drop = nn.Dropout(dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c_dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.drop(self.attn(modulate(self.norm1(x), shift1, scale1)))
        x = x + gate2[:, None] * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2)))
        return x  # (N, T, D)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_per_token: int, c_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_per_token)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c_dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """F(c_in * x, c_noise, cond): the raw network that the diffusion variant preconditions."""

    def __init__(
        self,
        resolution: int,
        channels: int,
        cond_dim: int,
        hidden: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        patch: int = 2,
        registers: int = 32,
        conv_channels: tuple[int, ...] = (4, 4),
        conv_strides: tuple[int, ...] = (1, 1),
        cond_width: int = 256,
        sigma_dim: int = 256,
        dropout: float = 0.1,
        zero_init_output: bool = True,
        aug_labels: bool = False,
    ):
        super().__init__()
        stride = math.prod(conv_strides)
        if resolution % (stride * patch):
            raise ValueError(
                f"resolution {resolution} is not divisible by the front-end stride {stride} "
                f"times the patch size {patch}"
            )
        if hidden % heads:
            raise ValueError(f"model.hidden={hidden} is not divisible by model.heads={heads}")
        self.patch, self.registers, self.cond_dim, self.sigma_dim = (
            patch,
            registers,
            cond_dim,
            sigma_dim,
        )
        self.grid = resolution // stride // patch
        c_feat = conv_channels[-1]
        chans = [channels, *conv_channels]
        self.encoder = nn.Sequential(
            *[ConvBlock(chans[i], chans[i + 1], s, False) for i, s in enumerate(conv_strides)]
        )
        self.patch_embed = nn.Conv2d(c_feat, hidden, patch, patch)
        self.register_buffer("pos_embed", sincos_pos_embed(hidden, self.grid), persistent=False)
        self.register_tokens = nn.Parameter(torch.randn(registers, hidden) * 0.02)
        # Sigma and condition embeddings sum into one conditioning vector of width cond_width,
        # which every adaLN layer reads (Table 4's "conditioning block channels").
        self.sigma_mlp = mlp2(sigma_dim, cond_width, cond_width, dropout)
        self.cond_mlp = mlp2(cond_dim, cond_width, cond_width, dropout) if cond_dim else None
        # EDM's augmentation label (augmented or not) as conditioning, as the release's
        # a_embedder: the network learns the augmentations without generating them.
        self.aug_embed = nn.Embedding(2, cond_width) if aug_labels else None
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, heads, mlp_ratio, dropout, cond_width) for _ in range(depth)
        )
        self.final = FinalLayer(hidden, patch * patch * c_feat, cond_width)
        dec = list(reversed(conv_channels))
        dec_out = [*dec[1:], conv_channels[0]]
        self.decoder = nn.Sequential(
            *[ConvBlock(dec[i], dec_out[i], s, True) for i, s in enumerate(reversed(conv_strides))]
        )
        self.out = nn.Conv2d(conv_channels[0], channels, 5, padding=2)
        self._zero_init(zero_init_output)

    def _zero_init(self, output: bool) -> None:
        """adaLN-Zero: every block starts as the identity; with `output`, the output layer
        starts at zero, as the release's last layer, so a fresh network outputs 0 and L_null
        is the loss of the preconditioning alone (EDM: D = c_skip x). The rest keeps
        PyTorch's defaults."""
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
        if output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        cond: torch.Tensor | None = None,
        aug: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`aug`: (N,) augmentation labels of the draws (None: not augmented, as in sampling)."""
        n = x.shape[0]
        h = self.encoder(x)  # (N, Cf, H', W')
        tokens = self.patch_embed(h).flatten(2).transpose(1, 2) + self.pos_embed  # (N, T, D)
        regs = self.register_tokens[None].expand(n, -1, -1)  # (N, R, D)
        tokens = torch.cat([regs, tokens], dim=1)  # (N, R+T, D)
        c = self.sigma_mlp(sigma_features(c_noise, self.sigma_dim))  # (N, Dc)
        if self.cond_mlp is not None:
            c = c + self.cond_mlp(condition_or_null(cond, x, self.cond_dim))
        if self.aug_embed is not None:
            c = c + self.aug_embed(labels_or_unaugmented(aug, x))
        for block in self.blocks:
            tokens = block(tokens, c)  # (N, R+T, D)
        out = self.final(tokens[:, self.registers :], c)  # (N, T, p*p*Cf)
        g, p = self.grid, self.patch
        out = out.reshape(n, g, g, p, p, -1).permute(0, 5, 1, 3, 2, 4)  # (N, Cf, g, p, g, p)
        h = out.reshape(n, -1, g * p, g * p)  # (N, Cf, H', W')
        return self.out(self.decoder(h))  # (N, C, H, W)
