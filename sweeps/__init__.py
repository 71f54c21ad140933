"""The sweep harness: grids, identity, launchers (submitit), tracking (MLflow), searches (Optuna)."""
