"""One script per paper table, named after it; each writes results/tables/<stem>.md and .tex."""
