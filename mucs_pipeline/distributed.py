"""One job in several processes: `torchrun --nproc_per_node=N` or N SLURM tasks, trainer=ddp.

Every process runs every stage. Pretraining, retraining and the scoring grid are split
across the processes through Lightning (DDP, a DistributedSampler for predict); the
other stages run on rank 0 while the rest wait. Rank 0 alone writes artifacts. The
process group is set up before the first stage, from Lightning's cluster environments
(torchelastic or SLURM variables), so the ranks can agree on which stages to skip.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _environment():
    """The launcher's environment (a Lightning ClusterEnvironment) when it started more
    than one process, else None."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        env = TorchElasticEnvironment()
    elif SLURMEnvironment.detect():
        env = SLURMEnvironment()
    else:
        return None
    return env if env.world_size() > 1 else None


def setup(cfg: DictConfig) -> None:
    """Join the job's process group (no-op for a single process)."""
    env = _environment()
    tc = cfg.trainer
    strategy = tc.get("strategy", "auto")
    processes = tc.get("devices", 1) * tc.get("num_nodes", 1)
    if env is None and strategy == "ddp" and processes > 1:
        raise ValueError(
            f"trainer=ddp with trainer.devices={tc.devices} runs one process per device: "
            f"start them with torchrun --nproc_per_node={tc.devices} -m mucs_pipeline ... "
            "or hydra/launcher=slurm"
        )
    if env is None or initialized():
        return
    if strategy != "ddp":
        raise ValueError(
            f"{env.world_size()} processes were launched, but trainer.strategy={strategy!r}: "
            "use trainer=ddp (or launch one process)"
        )
    os.environ.setdefault("MASTER_ADDR", env.main_address)
    os.environ.setdefault("MASTER_PORT", str(env.main_port))
    backend = "nccl" if tc.accelerator == "gpu" else "gloo"
    dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size())
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    log.info("rank %d of %d (%s)", rank(), world_size(), backend)


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))


def device(trainer_cfg: DictConfig) -> torch.device:
    """This process's device: under trainer=ddp, the GPU of its local rank."""
    if trainer_cfg.accelerator != "gpu":
        return torch.device("cpu")
    return torch.device("cuda", local_rank())


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if initialized():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable objects)."""
    if not initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
