"""VQBridge hyper-parameters: base learning rate x commitment beta x latent dimension d'.

Objective: validation rFID, or the reconstruction L2 when rFID cannot be computed (no FID weights).
Trials run through the same launcher as the grids (``parallel`` at a time), report intermediate
evaluations (``eval.every``) and are pruned by Optuna's median rule.

    python sweeps/run.py search=vqbridge_lr trials=8              # cpu scale, local
    python sweeps/run.py search=vqbridge_lr scale=paper launcher=slurm trials=32 parallel=8
"""
from sweeps.grids._fragments import vqbridge

base = {**vqbridge}
objective = ("rfid", "rec_l2")  # first available wins
evals_per_run = 3  # intermediate evaluations reported for pruning


def space(trial):
    return {
        "optim.base_lr": trial.suggest_float("optim.base_lr", 1e-5, 1e-3, log=True),
        "quant.beta": trial.suggest_float("quant.beta", 0.1, 1.0, log=True),
        "quant.latent_dim": trial.suggest_categorical("quant.latent_dim", [128, 256, 512]),
    }
