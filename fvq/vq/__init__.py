"""The tokenizer (section 3): the VQ layer (eq. 1, 4, 5), the codebook projectors (SimVQ's linear, MLP,
VQBridge), the multi-code quantizers (section 4.4), the LlamaGen encoder/decoder, the losses (eq. 35) and
their FLOPs (Table 10). Stands on core/ only."""
