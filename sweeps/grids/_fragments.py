"""Named override fragments combined per grid row (the audiocraft habit). Values are in paper terms
(ImageNet, VQ-16, K=16,384); sweeps/scale.py shrinks them for ``scale=cpu``.

The reference point of every grid is the empty dict: FVQ as in section 4.1 - VQBridge (d' = d = 256,
N = 2, p = 16) at K = 16,384 with learning annealing, 40 epochs.
"""
reference: dict = {}

# projectors (Table 5, Fig. 3)
vqbridge = {"quant.projector": "vqbridge"}
linear = {"quant.projector": "linear"}          # SimVQ (Zhu et al., 2024b)
mlp5 = {"quant.projector": "mlp", "quant.mlp_layers": 5}
plain = {"quant.projector": "none"}

# schedules (Table 3 row 3, Table 5, Table 9)
no_anneal = {"sched.kind": "constant"}
no_warmup = {"sched.warmup": 0.0}
cosine = {"sched.kind": "cosine"}

# codebook sizes with the official group sizes (p = 16 at 16k, 64 at 65k and 262k; Table 10)
k16 = {"quant.codebook_size": 16384, "quant.group": 16}
k65 = {"quant.codebook_size": 65536, "quant.group": 64}
k262 = {"quant.codebook_size": 262144, "quant.group": 64}

# the VQGAN baseline of Tables 1 and 3: LlamaGen's VQ (l2-normalised codes, no projector, constant lr)
vqgan = {**plain, **no_anneal, "quant.l2_norm": True}

# multi-code quantizers (section 4.4, Table 4; fvq/vq/multicode.py), one shared codebook as the originals
# RQ-VAE 8x8x4: its own ratio-32 tokenizer (256 -> 8x8), 4 residual codes per position
rq = {"quant.kind": "rq", "quant.depth_codes": 4, "model.arch": "vq-32"}
# VAR 680_10step on VQ-16's 16x16 latent, with VAR's 4 shared phi refiners
var = {"quant.kind": "msvq", "quant.scales": "1,2,3,4,5,6,8,10,13,16", "quant.phi": 4}
