"""Seconds and minor page faults of each meta-iteration, at a given micro-batch, in this process.

Shows why the planner splits CPU meta-iterations into small parts (mednf/engine/planner.py, "Small parts on
the CPU"): tensors above glibc's mmap threshold are faulted in page by page on every iteration. Run one
process per setting (the allocator's state carries over within a process)::

    python benchmarks/page_faults.py --micro-batch whole
    python benchmarks/page_faults.py --micro-batch 4
    MEDNF_MALLOC=keep python benchmarks/page_faults.py --micro-batch whole
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mednf.engine.meta import MetaLearner
from mednf.engine.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="2d-64")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--micro-batch", default="whole", help="whole or a number of signals per part")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    parser.add_argument("--iters", type=int, default=4)
    args = parser.parse_args()
    cfg = get_preset(args.preset).replace(meta={"batch_size": args.batch_size}, field={"precision": args.precision})
    micro = None if args.micro_batch == "whole" else int(args.micro_batch)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0)
    signals = torch.rand((args.batch_size, cfg.field.out_dims) + (args.size,) * cfg.field.in_dims,
                         generator=torch.Generator().manual_seed(0))  # [B, D, *spatial]
    for i in range(args.iters):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        stats = learner.step(signals, micro_batch=micro)
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        print(f"iteration {i + 1}: {seconds:.2f} s, {faults} minor page faults, loss {stats['loss']:.7f}", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()
