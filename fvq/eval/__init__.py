"""Evaluation of a tokenizer: codebook usage, PSNR, SSIM, LPIPS and rFID under the fvq / llamagen / official
protocols (docs/evaluation.md). Stands on core/ only."""
