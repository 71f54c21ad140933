"""Generation (Tables 2 and 11, Fig. 1 left, Fig. 5 right): the LlamaGen-style GPT (fvq/generation/gpt.py) on the
tokens of a tokenizer grid point, tokenizer x AR size x CFG. Each point names its tokenizer by a grid
point in paper terms (the launcher resolves it to a signature and runs it first when it is missing),
never by a path.

    python sweeps/run.py grid=generation seeds=3         # cpu: the claim-11 benchmark, 3 tokenizers a side
    python sweeps/run.py grid=generation scale=paper dry=true   # GPT-L cfg 1.75 and GPT-XL cfg 1.65

At cpu scale the tokenizers train on Fashion-MNIST and every AR size becomes the calibrated cpu generator
(sweeps/generation.py ``CPU_TOKENIZER``, ``CPU_AR``).
"""
from sweeps.grids._fragments import k16, plain, vqbridge

TOKENIZERS = {"vq": {**plain, **k16}, "fvq": {**vqbridge, **k16}}  # Table 2's "VQGAN" vs "FVQ" token rows
AR = [("L", 1.75), ("XL", 1.65)]  # paper sizes with their CFG scales (Appendix G)


def points():
    for name, tok in TOKENIZERS.items():
        for model, cfg in AR:
            yield {"tokenizer": tok, "tokenizer_name": name, "ar.model": model, "ar.cfg_scale": cfg}
