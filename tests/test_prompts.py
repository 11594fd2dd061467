"""COCO prompt mode: the attributed items are generated from the user's captions."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import make_cfg, run_main, write_coco

PROMPTS = ["a red bus", "picture 3 caption 1"]


def coco(tmp_path) -> list[str]:
    write_coco(tmp_path / "coco", "train2017", 12)
    write_coco(tmp_path / "coco", "val2017", 6)
    return ["dataset=coco", f"dataset.root={tmp_path / 'coco'}", "dataset.clip_pretrained=null",
            f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.resolution=16"]  # fmt: skip


@pytest.mark.slow
def test_prompts_run_through_the_whole_pipeline(tmp_path, monkeypatch, capsys):
    from mucs_pipeline.prompts import embed_prompts

    runs, data = tmp_path / "runs", coco(tmp_path)
    code, err = run_main(
        monkeypatch, capsys, runs, *data, "method=pixel", "trainer.threads=1",
        f"generate.captions=[{','.join(PROMPTS)}]", "generate.num_items=5",
    )  # fmt: skip
    assert code == 0, err
    (items,) = runs.glob("coco/seed0/generate/*/items.pt")
    target = torch.load(items, weights_only=True)["target"]
    assert target["captions"] == PROMPTS and len(target["seeds"]) == len(PROMPTS)
    cfg = make_cfg(tmp_path, *data, f"generate.captions=[{','.join(PROMPTS)}]")
    assert torch.equal(target["cond"], embed_prompts(cfg))
    (results,) = runs.glob("coco/seed0/evaluate/*/results.csv")
    rows = list(csv.DictReader(open(results)))
    assert {r["subset"] for r in rows} == {"target", "control"}
    assert all(int(r["n_items"]) == len(PROMPTS) for r in rows if r["subset"] == "target")


def test_a_caption_file_is_the_same_prompts(tmp_path):
    from mucs_pipeline.layout import Layout
    from mucs_pipeline.prompts import apply_prompts

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    keys = []
    for given in (f"[{','.join(PROMPTS)}]", str(tmp_path / "prompts.txt")):
        cfg = make_cfg(tmp_path, "dataset=coco", f"generate.captions={given}")
        apply_prompts(cfg)
        assert list(cfg.generate.captions) == PROMPTS and cfg.generate.num_items == 2
        keys.append(Layout(cfg).key("generate"))
    assert keys[0] == keys[1]
    plain = make_cfg(tmp_path, "dataset=coco")
    assert Layout(plain).key("generate") != keys[0]


def test_prompts_on_a_dataset_without_captions_exit_2(tmp_path, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, tmp_path / "runs", "generate.captions=[a cat]")
    assert code == 2 and "expected dataset=coco" in err[-1]
