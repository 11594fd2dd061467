"""Scale-out: sweeps sharing artifacts, the SLURM launcher config, plan=true, kill -9 resume."""

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF, cli_command, make_cfg, micro, run_cli
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mucs_pipeline import pipeline
from mucs_pipeline.layout import Layout
from mucs_pipeline.stages import retrain

ROOT = Path(__file__).resolve().parent.parent


def cli(runs: Path, *args: str) -> str:
    done = run_cli(runs, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_lambda_sweep_and_two_ablations_share_one_pretrained_model(tmp_path):
    out = cli(tmp_path, "-m", "+experiment=digits_mucs", "method.lam=0.1,0.2")
    out += cli(
        tmp_path, "-m", "+experiment=digits_mucs", "+ablation=s_c1_subtract,u_c3_fixed_steps"
    )
    root = tmp_path / "digits" / "seed0"
    assert len(list((root / "pretrain").glob("*/manifest.json"))) == 1
    assert len(list((root / "generate").glob("*/manifest.json"))) == 1
    assert len(list((root / "retrain").glob("random-*/manifest.json"))) == 1
    assert len(list((root / "attribute").glob("mucs-*/manifest.json"))) == 4
    tables = list((root / "evaluate").glob("mucs-*/results.csv"))
    assert len(tables) == 4
    assert out.count("skip pretrain") == 3  # jobs 2-4 found the first job's F1


def test_sweep_files_expand_to_the_paper_protocols():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for sweep, key, expected in [
            ("lam", "method.lam", "0.1,0.2,0.3"),
            ("ablations", "+ablation", "glob(*)"),
            ("seeds", "seed", "range(6)"),
        ]:
            cfg = compose(
                "config", overrides=["+experiment=coco_mucs", f"+sweep={sweep}"],
                return_hydra_config=True,
            )  # fmt: skip
            assert cfg.hydra.sweeper.params == {key: expected}
    assert len(list((CONF / "ablation").glob("*.yaml"))) == 9  # the rows of Table 2


def test_slurm_launcher_composes_with_one_task_per_device():
    import mucs_pipeline.__main__  # noqa: F401  (registers the log_dir resolver the hydra config uses)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=slurm", "+experiment=cifar10_mucs", "trainer=gpu",
                "trainer.devices=4", "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4
    assert launcher.partition == "gpu" and launcher.timeout_min > 0
    assert launcher.array_parallelism > 0 and launcher.mem_gb > 0 and launcher.cpus_per_task > 0
    slurm = instantiate(launcher)  # the plugin accepts every key
    assert type(slurm).__name__ == "SlurmLauncher"
    assert slurm.params["tasks_per_node"] == 4


def test_a_job_waits_for_another_computing_a_shared_unit_then_skips_it(tmp_path, caplog):
    pipeline.run(make_cfg(tmp_path, "stages=[pretrain,generate]"))
    folder = Layout(make_cfg(tmp_path)).dir("generate")
    manifest, items = folder / "manifest.json", folder / "items.pt"
    finished, written = manifest.read_text(), items.stat().st_mtime_ns
    manifest.unlink()  # another job is computing generate, under the unit's lock
    other = FileLock(folder.parent / f".{folder.name}.lock")
    other.acquire()
    job = threading.Thread(target=pipeline.run, args=(make_cfg(tmp_path, "stages=[generate]"),))
    with caplog.at_level(logging.INFO, logger="mucs_pipeline.runner"):
        job.start()
        deadline = time.time() + 120
        while "waiting for generate" not in caplog.text and time.time() < deadline:
            time.sleep(0.1)
        manifest.write_text(finished)  # the other job finishes
        other.release()
        job.join(timeout=120)
    assert "waiting for generate: another job is computing it" in caplog.text
    assert "skip generate" in caplog.text and items.stat().st_mtime_ns == written


class Killed(Exception):
    """The job died here."""


def test_plan_lists_skips_of_a_half_finished_run_and_writes_nothing(tmp_path, capsys, monkeypatch):
    pipeline.run(make_cfg(tmp_path, "stages=[pretrain,generate,null_loss,attribute]"))

    def train_then_die(*args, **kwargs):
        train(*args, **kwargs)
        raise Killed  # before the retrain's outputs: its checkpoint is left to resume from

    train = retrain.train
    monkeypatch.setattr(retrain, "train", train_then_die)
    with pytest.raises(Killed):
        pipeline.run(make_cfg(tmp_path, "stages=[retrain]"))
    cfg = make_cfg(tmp_path, "plan=true")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rows = pipeline.run(cfg)["plan"]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    states = {(r["stage"], r["method"]): r["state"] for r in rows}
    assert states == {
        ("pretrain", ""): "skip", ("generate", ""): "skip", ("null_loss", ""): "skip",
        ("attribute", "mucs"): "skip", ("attribute", "random"): "skip",
        ("retrain", "mucs"): "resume", ("retrain", "random"): "run",
        ("regenerate", "mucs"): "run", ("regenerate", "random"): "run", ("evaluate", ""): "run",
    }  # fmt: skip
    pretrain = next(r for r in rows if r["stage"] == "pretrain")
    assert pretrain["steps"] == cfg.pretrain.steps
    fit = min(cfg.null_loss.batch_size, 120) * cfg.null_loss.num_batches  # F1's fit, once
    assert pretrain["forwards"] == cfg.pretrain.steps * 120 + fit  # batch 128 capped at |Z|
    mucs = next(r for r in rows if r["method"] == "mucs" and r["stage"] == "attribute")
    m, n, method = cfg.generate.num_items, 120, cfg.method
    assert mucs["forwards"] >= (m + 1) * n * method.num_noises
    assert "units to compute" in capsys.readouterr().out


def kill_when(proc: subprocess.Popen, pattern: str, root: Path, timeout: float = 600) -> None:
    """SIGKILL `proc` as soon as a file matching `pattern` appears under `root`."""
    deadline = time.time() + timeout
    while not list(root.glob(pattern)):
        assert proc.poll() is None, f"finished before {pattern} appeared"
        assert time.time() < deadline, f"no {pattern} after {timeout} s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_9_mid_scoring_and_mid_retraining_resumes_to_the_same_result(tmp_path):
    args = [
        "+experiment=digits_mucs", "stages=[pretrain,generate,null_loss,attribute,retrain]",
        "generate.num_items=5", "method.max_steps=40", "method.stop_rule=false",
        "retrain.steps=150", "pretrain.checkpoint_every=10",
    ]  # fmt: skip
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    cli(reference, *args)
    root = killed / "digits" / "seed0"

    proc = subprocess.Popen(cli_command(killed, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    kill_when(proc, "attribute/mucs-*/items/item0001.pt", root)
    items = root.glob("attribute/mucs-*/items/*.pt")
    finished = {p: p.stat().st_mtime_ns for p in items}
    assert 2 <= len(finished) < 5 and not list(root.glob("attribute/mucs-*/scores.pt"))

    proc = subprocess.Popen(cli_command(killed, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    kill_when(proc, "retrain/*/checkpoints/last.ckpt", root)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not recomputed
    ckpt = next(root.glob("retrain/*/checkpoints/last.ckpt"))
    # Our own checkpoint (Lightning's loop state is not tensors-only).
    resumed_at = torch.load(ckpt, weights_only=False)["global_step"]
    assert 0 < resumed_at < 150

    out = cli(killed, *args)
    assert "resuming from" in out
    with open(ckpt.parent.parent / "logs" / "metrics.csv") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f)]
    assert min(logged) >= resumed_at  # the finished steps were not trained again
    ref_root = reference / "digits" / "seed0"
    scores = [load(r, "attribute/mucs-*/scores.pt")["scores"] for r in (ref_root, root)]
    assert torch.equal(*scores)
    ref_ema, new_ema = (load(r, "retrain/mucs-*/ema.pt") for r in (ref_root, root))
    assert ref_ema.keys() == new_ema.keys()
    assert all(torch.equal(ref_ema[k], new_ema[k]) for k in ref_ema)


def load(root: Path, pattern: str):
    return torch.load(next(root.glob(pattern)), weights_only=True)


@pytest.mark.slow
def test_two_ddp_processes_score_and_retrain_like_one(tmp_path):
    """torchrun with 2 CPU processes (gloo): the same scores as 1 process, bit for bit,
    with each rank scoring half the training items; a DDP retrain within float rounding."""
    stages = "stages=[pretrain,generate,null_loss,attribute,retrain]"
    one, two = tmp_path / "one", tmp_path / "two"
    cli(one, "+experiment=digits_mucs", stages)
    shutil.copytree(one, two)
    for name in ("attribute", "retrain", "cache"):  # F1 losses too are scored again
        shutil.rmtree(two / "digits" / "seed0" / name)
    experiment = "+experiment=digits_mucs"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "mucs_pipeline", *micro([experiment]), f"paths.runs_dir={two}", experiment, stages,
         "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.compile_scoring=false",  # as on CPU: compiled kernels round differently
         "trainer.bf16_scoring=false",  # as on CPU (trainer=ddp takes gpu's bf16 scoring)
         "hydra.verbose=mucs_pipeline.attribution.scoring"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for rank in (0, 1):
        assert f"F1 losses: rank {rank} scored 60 of 120 items" in out
        assert f"score item 1: rank {rank} scored 60 of 120 items" in out
    roots = [r / "digits" / "seed0" for r in (one, two)]
    scores = [load(r, "attribute/mucs-*/scores.pt")["scores"] for r in roots]
    assert torch.equal(*scores)
    for method in ("mucs", "random"):
        single, ddp = (load(r, f"retrain/{method}-*/ema.pt") for r in roots)
        assert all(torch.allclose(single[k], ddp[k], atol=1e-4) for k in single)
        assert not all(torch.equal(single[k], ddp[k]) for k in single)  # really another run


def test_ddp_without_a_process_launcher_says_how_to_launch(tmp_path):
    with pytest.raises(ValueError, match="torchrun --nproc_per_node=2"):
        pipeline.run(make_cfg(tmp_path, "trainer=ddp", "trainer.accelerator=cpu"))
    assert not (tmp_path / "digits").exists()
