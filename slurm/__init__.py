"""Cluster specs (`slurm.spec`) and the single-node dev cluster used by the tests (`slurm.devcluster`)."""
