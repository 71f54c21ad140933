"""Analysis: MLflow -> results/*.csv (collect) -> tables and figures (build). Imports mlflow; fvq/ never does."""
