"""The authors' release's UNet: DDPM++ (Song et al. 2021) as EDM's SongUNet configures it
(`model=unet_edm`, `model=unet_vp`), and what every UNet shares: the timestep it is given.

The modules and parameter names follow the release's models/unet_edm.py and lib/unet_nn.py
(enc/dec module dicts, UNetBlock with norm0/conv0/affine/norm1/conv1/skip/norm2/qkv/proj),
so that a state dict of the release loads as it is (`pretrain.init_from`). The network is
written here rather than imported: the release is not a package, and its attention is a
custom autograd function that torch.func (per-sample gradients, stacked models) cannot
trace; here attention is PyTorch's scaled-dot-product kernel, the same softmax(q k / sqrt(c)) v.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mucs_pipeline.models.diffusion import condition_or_null, labels_or_unaugmented


class NoiseInput:
    """The noise level a UNet is given, from the c_noise the diffusion variant passes:
    EDM's ln(sigma) / 4 as it is (EDM's UNets, diffusers' EDM schedulers); DDPM's t / T
    back to the integer timestep t (diffusers' UNet2DModel and the release's VP UNet,
    whose c_noise is (M - 1) t); flow matching's t in [0, 1] as 1000 t (diffusers'
    flow-matching schedulers)."""

    def __init__(self, diffusion: str, num_timesteps: int = 1000):
        if diffusion not in ("edm", "ddpm", "flow"):
            raise ValueError(f"diffusion {diffusion!r}: a UNet takes edm, ddpm or flow")
        self.diffusion, self.num_timesteps = diffusion, num_timesteps

    def __call__(self, c_noise: torch.Tensor) -> torch.Tensor:
        if self.diffusion == "ddpm":  # t / T in float32 times T rounds back to t exactly
            return (c_noise.float() * self.num_timesteps).round()
        if self.diffusion == "flow":
            return c_noise.float() * 1000
        return c_noise.float()


def xavier_uniform(shape: tuple[int, ...], fan_in: int, fan_out: int) -> torch.Tensor:
    """The release's weight_init(mode='xavier_uniform')."""
    return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)


class Linear(nn.Module):
    """A fully connected layer initialised as the release's (xavier uniform, zero bias)."""

    def __init__(self, c_in: int, c_out: int, init_weight: float = 1.0):
        super().__init__()
        self.in_features = c_in
        self.weight = nn.Parameter(xavier_uniform((c_out, c_in), c_in, c_out) * init_weight)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Conv2d(nn.Module):
    """A convolution preceded, with `up` or `down`, by resampling with the FIR filter
    `resample_filter` ([1, 1]: nearest-neighbour up, 2x2 average down)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        up: bool = False,
        down: bool = False,
        resample_filter: tuple[int, ...] = (1, 1),
        init_weight: float = 1.0,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down = c_in, c_out, up, down
        fan_in, fan_out = c_in * kernel * kernel, c_out * kernel * kernel
        shape = (c_out, c_in, kernel, kernel)
        self.weight = nn.Parameter(xavier_uniform(shape, fan_in, fan_out) * init_weight)
        self.bias = nn.Parameter(torch.zeros(c_out))
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = f.outer(f)[None, None] / f.sum().square()
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.resample_filter
        if f is not None:
            pad = (f.shape[-1] - 1) // 2
            if self.up:
                kernel = (f * 4).tile(self.in_channels, 1, 1, 1)
                x = F.conv_transpose2d(x, kernel, groups=self.in_channels, stride=2, padding=pad)
            else:
                kernel = f.tile(self.in_channels, 1, 1, 1)
                x = F.conv2d(x, kernel, groups=self.in_channels, stride=2, padding=pad)
        return F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)


class GroupNorm(nn.GroupNorm):
    """Group normalisation with at most 32 groups of at least 4 channels (the release's)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(min(32, channels // 4), channels, eps=eps)


class UNetBlock(nn.Module):
    """DDPM++'s residual block: GroupNorm, SiLU, 3x3 conv, the embedding added, again;
    skip scaled by sqrt(1/2); optional up/down-sampling and one-head self-attention."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        emb_channels: int,
        dropout: float,
        resample_filter: tuple[int, ...],
        up: bool = False,
        down: bool = False,
        attention: bool = False,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.dropout = c_in, c_out, dropout
        self.norm0 = GroupNorm(c_in)
        self.conv0 = Conv2d(c_in, c_out, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, c_out)
        self.norm1 = GroupNorm(c_out)
        self.conv1 = Conv2d(c_out, c_out, 3, init_weight=1e-5)
        self.skip = None
        if c_out != c_in or up or down:
            self.skip = Conv2d(c_in, c_out, 1, up=up, down=down, resample_filter=resample_filter)
        self.attention = attention
        if attention:
            self.norm2 = GroupNorm(c_out)
            self.qkv = Conv2d(c_out, c_out * 3, 1, init_weight=math.sqrt(0.2))
            self.proj = Conv2d(c_out, c_out, 1, init_weight=1e-5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (x if self.skip is None else self.skip(x))) * np.sqrt(0.5)
        if self.attention:
            n, c, height, width = x.shape
            # channels are laid out (c, q/k/v) as the release's reshape reads them
            q, k, v = self.qkv(self.norm2(x)).reshape(n, c, 3, height * width).unbind(2)
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None], v.transpose(1, 2)[:, None]
            )  # (N, 1, HW, C): one head
            a = a[:, 0].transpose(1, 2).reshape(n, c, height, width)
            x = (self.proj(a) + x) * np.sqrt(0.5)
        return x


def sinusoids(t: torch.Tensor, channels: int) -> torch.Tensor:
    """The noise-level features: sin, then cos, at frequencies 10000^(-i / (channels/2 - 1))
    (EDM's PositionalEmbedding with endpoint, in the release's sin-first order)."""
    half = channels // 2
    freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class SongUNet(nn.Module):
    """F(c_in x, c_noise, cond): DDPM++ with the release's mapping network (noise features,
    label and augmentation-label embeddings, two SiLU layers)."""

    def __init__(
        self,
        resolution: int,
        channels: int,
        cond_dim: int,
        noise_input: NoiseInput,
        model_channels: int = 128,
        channel_mult: tuple[int, ...] = (2, 2, 2),
        channel_mult_emb: int = 4,
        channel_mult_noise: int = 1,
        num_blocks: int = 4,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.1,
        resample_filter: tuple[int, ...] = (1, 1),
        aug_labels: bool = False,
    ):
        super().__init__()
        if resolution % 2 ** (len(channel_mult) - 1):
            raise ValueError(
                f"resolution {resolution} is not divisible by 2^{len(channel_mult) - 1} "
                f"(model.channel_mult has {len(channel_mult)} levels)"
            )
        self.noise_input, self.cond_dim = noise_input, cond_dim
        emb_channels = model_channels * channel_mult_emb
        self.noise_channels = model_channels * channel_mult_noise
        self.map_label = Linear(cond_dim, self.noise_channels) if cond_dim else None
        # The release's augmentation label (augmented or not), as the DiT's aug_embed.
        self.map_augment = _Embedding(2, self.noise_channels) if aug_labels else None
        self.map_layer0 = Linear(self.noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)
        block = {"emb_channels": emb_channels, "dropout": dropout}
        block["resample_filter"] = tuple(resample_filter)

        self.enc = nn.ModuleDict()
        c_out = channels
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(c_out, model_channels, 3)
                c_out = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(c_out, c_out, down=True, **block)
            for i in range(num_blocks):
                c_in, c_out = c_out, model_channels * mult
                attn = res in attn_resolutions
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(c_in, c_out, attention=attn, **block)
        skips = [b.out_channels for b in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(c_out, c_out, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(c_out, c_out, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(c_out, c_out, up=True, **block)
            for i in range(num_blocks + 1):
                c_in, c_out = c_out + skips.pop(), model_channels * mult
                attn = i == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(c_in, c_out, attention=attn, **block)
        top = f"{resolution}x{resolution}"
        self.dec[f"{top}_aux_norm"] = GroupNorm(c_out)
        self.dec[f"{top}_aux_conv"] = Conv2d(c_out, channels, 3, init_weight=1e-5)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        cond: torch.Tensor | None = None,
        aug: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`aug`: (N,) augmentation labels of the draws (None: not augmented)."""
        emb = sinusoids(self.noise_input(c_noise.reshape(-1)), self.noise_channels)
        if self.map_label is not None:
            cond = condition_or_null(cond, x, self.cond_dim)
            emb = emb + self.map_label(cond * np.sqrt(self.cond_dim))
        if self.map_augment is not None:
            emb = emb + self.map_augment(labels_or_unaugmented(aug, x))
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for layer in self.enc.values():
            x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
            skips.append(x)
        out = None
        for name, layer in self.dec.items():
            if name.endswith("aux_norm"):
                out = layer(x)
            elif name.endswith("aux_conv"):
                out = layer(F.silu(out))
            else:
                if x.shape[1] != layer.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = layer(x, emb)
        return out


class _Embedding(nn.Module):
    """A learned vector per label, N(0, 1)-initialised (the release's LabelEmbedder: its
    table is the state dict's `emb.weight`)."""

    def __init__(self, num: int, channels: int):
        super().__init__()
        self.emb = nn.Embedding(num, channels)
        nn.init.normal_(self.emb.weight, std=1.0)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.emb(labels)
