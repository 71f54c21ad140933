# Source me: point Slurm clients (sbatch, squeue, sacct, scontrol, submitit) at the dev cluster.
#   source slurm/dev-cluster/env.sh
# The dev cluster writes nothing under /etc/slurm: its config lives in the state dir and clients find it
# through SLURM_CONF (jobs inherit it, since sbatch exports the submitting environment).
export FVQ_SLURM_DIR="${FVQ_SLURM_DIR:-/tmp/fvq-slurm}"
export SLURM_CONF="$FVQ_SLURM_DIR/etc/slurm.conf"
