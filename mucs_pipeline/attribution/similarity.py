"""Model-agnostic baselines: cosine similarity between the generated item and each training item.

Pixel (raw pixels; the offline analogue of CLIP/DINO), Condition (condition vectors),
CLIP (open_clip image embeddings) and DINO (DINOv2 embeddings) differ only in the
embedding; training-set embeddings are computed once per run and cached on disk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import Context, Method
from mucs_pipeline.data.base import one_hot


class CosineMethod(Method):
    """score_i = cos(e(z_hat), e(z_i)) for an embedding e."""

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        self.train_emb = self._cached_train_embeddings()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of images in [-1, 1], (N, C, H, W) -> (N, D)."""
        raise NotImplementedError

    def train_embeddings(self) -> torch.Tensor:
        x = self.ctx.data.x
        batch = self.cfg.get("batch_size", 256)
        return torch.cat(
            [
                self.embed(x[i : i + batch]).float().cpu()
                for i in tqdm(range(0, len(x), batch), desc=f"{self.name} embeddings", leave=False)
            ]
        )

    def _cached_train_embeddings(self) -> torch.Tensor:
        name = f"{self.name}_embeddings-{io.config_hash(self.cfg)}.pt"
        return self.ctx.cached(name, self.train_embeddings)

    def item_embedding(self, x_hat: torch.Tensor, c_hat: torch.Tensor | None) -> torch.Tensor:
        return self.embed(x_hat[None]).float().cpu()

    def score(self, index, x_hat, c_hat):
        e = self.item_embedding(x_hat, c_hat)
        return F.cosine_similarity(self.train_emb, e.reshape(1, -1), dim=1), {}


class Pixel(CosineMethod):
    name = "pixel"

    def embed(self, x):
        return x.flatten(1)

    def _cached_train_embeddings(self):  # the pixels themselves: nothing to cache
        return self.train_embeddings()


class Condition(CosineMethod):
    """Cosine of condition vectors (one-hot class ids; CLIP-Text for COCO).

    Unconditional data (CIFAR10) has class labels but no condition: the training items use
    one-hot labels and the generated item gets the label of `labeler` (see method/condition.yaml).
    """

    name = "condition"

    def train_embeddings(self):
        data = self.ctx.data
        if data.cond is not None:
            return data.cond.float()
        if data.labels is None:
            raise ValueError(
                f"method=condition needs conditions or class labels; dataset "
                f"{self.ctx.cfg.dataset.name!r} has neither"
            )
        return one_hot(data.labels, int(data.labels.max()) + 1)

    def _cached_train_embeddings(self):  # already in memory
        return self.train_embeddings()

    def item_embedding(self, x_hat, c_hat):
        if self.ctx.data.cond is not None:
            return c_hat.float()
        label = self.label(x_hat)
        return one_hot(torch.tensor([label]), self.train_emb.shape[1])

    def label(self, x_hat: torch.Tensor) -> int:
        """The generated item's class: a TorchScript classifier, or a k-NN vote in pixel space."""
        cfg, data = self.cfg, self.ctx.data
        if cfg.labeler == "torchscript":
            net = torch.jit.load(cfg.classifier, map_location="cpu").eval()
            with torch.inference_mode():
                return int(net(x_hat[None].float()).argmax(dim=1).item())
        if cfg.labeler != "knn":
            raise ValueError(f"method.labeler={cfg.labeler!r}: expected 'knn' or 'torchscript'")
        sim = F.cosine_similarity(data.x.flatten(1), x_hat.reshape(1, -1), dim=1)
        nearest = sim.topk(min(cfg.knn_k, len(sim))).indices
        return int(torch.mode(data.labels[nearest]).values.item())


class EncoderMethod(CosineMethod):
    """Cosine in the embedding space of a pretrained image encoder."""

    def __init__(self, cfg, ctx):
        self.encoder = self.load_encoder(cfg).to(ctx.device)
        super().__init__(cfg, ctx)

    def load_encoder(self, cfg) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def cost(cls, cfg, n, m):
        return n + m, 0, 0  # one encoder forward per image

    def embed(self, x):
        return self.encoder(x)


class CLIP(EncoderMethod):
    """Cosine in open_clip image-embedding space (authors: ViT-L-14 laion2b_s32b_b82k)."""

    name = "clip"

    def load_encoder(self, cfg):
        from mucs_pipeline.pretrained import clip_image_encoder

        return clip_image_encoder(cfg.model, cfg.pretrained, cfg.cache_dir)


class DINO(EncoderMethod):
    """Cosine in DINOv2 ViT-B/14 class-token space."""

    name = "dino"

    @classmethod
    def weight_files(cls, cfg):
        return {"weights": "DINOv2 ViT-B/14 weights"}

    def load_encoder(self, cfg):
        from mucs_pipeline.pretrained import dino_encoder

        return dino_encoder(cfg.arch, cfg.weights, cfg.image_size)
