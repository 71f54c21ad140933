"""The library of the FVQ / VQBridge reproduction (torch only: never sweeps/, submitit or mlflow), in rooms
that follow the paper's two stages. Every import points down a floor (pinned by tests/test_layout.py):

    top      train.py (the tokenizer's training loop), generation/ (the second stage: GPT on the tokens)
    3        build.py (config -> objects), toy.py (the dynamic VQ toy of section 2, Fig. 2)
    2        vq/ (the tokenizer of section 3) and eval/ (usage, PSNR, SSIM, LPIPS, rFID), side by side
    ground   core/ (config, data, run dir, checkpoints, tracking hook, data-parallel plumbing)

Nothing is imported here: ``import fvq.vq.quantize`` loads what it names and what lies below it.
"""
