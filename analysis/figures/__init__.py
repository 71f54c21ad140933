"""One script per paper figure, named after it; each writes results/figures/<stem>.png and .pdf."""
