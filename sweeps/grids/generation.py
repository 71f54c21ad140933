"""Generation (Tables 2 and 11, Fig. 1 left, Fig. 5 right): the LlamaGen-style GPT (fvq/generation/gpt.py) on the
tokens of a tokenizer grid point, tokenizer x AR size x CFG. Each point names its tokenizer by a grid
point in paper terms (the launcher resolves it to a signature and runs it first when it is missing),
never by a path.

    python sweeps/run.py grid=generation                 # cpu scale: GPT-tiny, cfg 1, plain VQ vs FVQ
    python sweeps/run.py grid=generation scale=paper dry=true   # GPT-L cfg 1.75 and GPT-XL cfg 1.65

At cpu scale every AR size becomes ``tiny`` and the CFG scale 1.0 (sweeps/generation.py): a tiny model
trained for minutes gains nothing from guidance, and its null class is barely trained.
"""
from sweeps.grids._fragments import k16, plain, vqbridge

TOKENIZERS = {"vq": {**plain, **k16}, "fvq": {**vqbridge, **k16}}  # Table 2's "VQGAN" vs "FVQ" token rows
AR = [("L", 1.75), ("XL", 1.65)]  # paper sizes with their CFG scales (Appendix G)


def points():
    for name, tok in TOKENIZERS.items():
        for model, cfg in AR:
            yield {"tokenizer": tok, "tokenizer_name": name, "ar.model": model, "ar.cfg_scale": cfg}
