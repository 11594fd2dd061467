"""Pretrained networks from local files or caches, with an error that says what to download."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=2)  # one load per process, however many caption sets it embeds
def open_clip_model(
    model: str, pretrained: str | None, cache_dir: str | None
) -> tuple[torch.nn.Module, object]:
    """An open_clip model (eval mode) and its tokenizer.

    `pretrained` is an open_clip tag found in `cache_dir` (e.g. "openai"), a local checkpoint
    file, or None for a randomly initialised network of the same architecture (tests).
    """
    import open_clip

    try:
        net = open_clip.create_model(
            model,
            pretrained=pretrained,
            cache_dir=cache_dir,
            require_pretrained=pretrained is not None,
        )
    except Exception as err:  # open_clip raises several types for a missing or unreachable file
        raise FileNotFoundError(
            f"open_clip weights {model!r} / {pretrained!r} are not available offline "
            f"(cache_dir={cache_dir!r}): {err}. On a machine with internet, run "
            f"`python -c \"import open_clip; open_clip.create_model('{model}', "
            f"pretrained='{pretrained}', cache_dir='CACHE')\"` and copy CACHE here (set the "
            "cache_dir key), or set the pretrained key to a local open_clip checkpoint file"
        ) from err
    return net.eval(), open_clip.get_tokenizer(model)


@torch.inference_mode()
def clip_text_embeddings(
    texts: list[str],
    model: str,
    pretrained: str | None,
    cache_dir: str | None,
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised CLIP-Text embeddings, (N, D)."""
    net, tokenizer = open_clip_model(model, pretrained, cache_dir)
    out = [
        torch.nn.functional.normalize(
            net.encode_text(tokenizer(texts[i : i + batch_size])).float(), dim=-1
        )
        for i in range(0, len(texts), batch_size)
    ]
    return torch.cat(out)
