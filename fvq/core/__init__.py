"""The ground floor every other room stands on: the run's config and its checks, the set-up errors, the data
and the order training sees it in, the lr schedule, the run dir, checkpoints, the tracking hook, progress
and the data-parallel plumbing. Imports nothing from the rooms above."""
