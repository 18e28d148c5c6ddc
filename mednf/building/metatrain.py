"""The meta-learning stage: the mean-image baseline of the validation subset, then θ meta-learned by
:class:`mednf.building.trainer.MetaTrainer` (resumable, validated), and the best θ kept."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mednf.building.run import BuildRun
from mednf.building.trainer import MetaTrainer, TrainSummary
from mednf.engine.baselines import mean_image, psnr_against
from mednf.engine.execution import Execution
from mednf.engine.planner import MemoryPlan
from mednf.sources.base import SourceData


@dataclass(frozen=True)
class Trained:
    """What meta-learning leaves for the fit and the manifest."""

    summary: TrainSummary
    theta: dict[str, torch.Tensor]  # the best validation's θ, on the CPU
    mean: np.ndarray  # [D, *spatial] mean training image: the baseline every split is compared with
    val_baseline: float  # PSNR of the mean image on the validation subset (dB)


def meta_train(run: BuildRun, source: SourceData, plan: MemoryPlan, execution: Execution) -> Trained:
    """Meta-learn θ from the last checkpoint (if any) to ``meta.steps`` iterations; said in build.log."""
    train, val = source.splits["train"].images, source.splits["val"].images
    mean = mean_image(train)
    val_baseline = float(psnr_against(val[:run.spec.build.val_samples], mean).mean())
    trainer = MetaTrainer(run.cfg, run.spec.build, train, val, run.work, seed=run.spec.seed, execution=execution,
                          dist=run.dist, log=run.say, plan=plan, val_baseline=val_baseline,
                          tensorboard=run.options.tensorboard)
    summary = trainer.run(progress=run.options.progress)
    theta = trainer.best_params()
    run.say(f"meta-training done: best validation PSNR {summary.best_val_psnr:.2f} dB at iteration "
            f"{summary.best_step}")
    return Trained(summary, theta, mean, val_baseline)
