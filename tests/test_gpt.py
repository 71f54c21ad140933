"""The generator's GPT (fvq/generation/gpt.py): KV cache == full recomputation, CFG and its interval, the RoPE
table, determinism, sizes, filters."""
import pytest
import torch

from fvq.generation.gpt import GPT, PRESETS, apply_rope, filter_logits, generate, guided, guided_at, rope_2d, spec


def tiny(**over) -> GPT:
    torch.manual_seed(0)
    m = GPT(spec("tiny", vocab=37, classes=5, tokens=16, **over)).double()
    for p in m.head.parameters():  # the zero-init head would make every distribution uniform
        torch.nn.init.normal_(p, 0, 0.5)
    return m.eval()


def test_cached_logits_equal_full_recomputation():
    m = tiny()
    y = torch.tensor([0, 3])
    codes = torch.randint(37, (2, 15))
    full = m(codes, y)  # (2, 16, V)
    m.reset_cache()
    steps = [m(None, y, start=0)[:, -1]]
    for i in range(15):
        steps.append(m(codes[:, i:i + 1], None, start=i + 1)[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-10)


@pytest.mark.parametrize("cfg,top_k,top_p,temp", [(1.0, 0, 1.0, 1.0), (1.75, 0, 1.0, 1.0), (1.65, 5, 0.9, 0.8)])
def test_cached_sampling_equals_uncached(cfg, top_k, top_p, temp):
    m = tiny()
    y = torch.tensor([1, 2, 4])
    kw = dict(cfg=cfg, top_k=top_k, top_p=top_p, temperature=temp, seed=7)
    a = generate(m, y, cache=True, **kw)
    b = generate(m, y, cache=False, **kw)
    assert a.shape == (3, 16) and torch.equal(a, b)


def test_kv_cache_is_preallocated_once_per_sampling():
    """One buffer per layer for the whole sequence (LlamaGen's KVCache), written in place step by step."""
    m = tiny()
    y = torch.tensor([0, 3])
    m.reset_cache()
    m(None, y, start=0)
    k, v = m.blocks[0].attn.cache
    assert k.shape == v.shape == (2, 4, 17, 16)  # batch, heads, 1 + tokens, head_dim
    ptr = k.data_ptr()
    for i in range(1, 17):
        m(torch.randint(37, (2, 1)), None, start=i)
    assert m.blocks[0].attn.cache[0].data_ptr() == ptr
    with pytest.raises(ValueError, match="beyond the sequence length"):
        m(torch.randint(37, (2, 1)), None, start=17)
    m.reset_cache()
    with pytest.raises(RuntimeError, match="without a prefill"):
        m(torch.randint(37, (2, 1)), None, start=1)


def test_cfg_interval_guides_the_first_codes_only():
    """LlamaGen's decode_n_tokens: prefill (code 0) guided, decode step i (code i+1) guided while i <= interval."""
    assert all(guided_at(i, -1) for i in range(256))
    assert [guided_at(i, 0) for i in range(4)] == [True, True, False, False]
    assert [guided_at(i, 3) for i in range(7)] == [True] * 5 + [False] * 2
    m = tiny()
    y = torch.tensor([0, 1, 2, 3])
    full = generate(m, y, cfg=3.0, seed=5)
    assert torch.equal(generate(m, y, cfg=3.0, seed=5, cfg_interval=15), full)  # all 16 codes guided
    part = generate(m, y, cfg=3.0, seed=5, cfg_interval=0)
    assert torch.equal(part[:, :2], full[:, :2]) and not torch.equal(part, full)
    assert torch.equal(part, generate(m, y, cfg=3.0, seed=5, cfg_interval=0, cache=False))


def test_sampling_is_deterministic_given_seed_and_varies_with_it():
    m = tiny()
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(generate(m, y, seed=3), generate(m, y, seed=3))
    assert not torch.equal(generate(m, y, seed=3), generate(m, y, seed=4))


def test_cfg_combines_conditional_and_unconditional_logits():
    c, u = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 0.0]])
    assert torch.allclose(guided(torch.cat([c, u]), 1.0), c)
    assert torch.allclose(guided(torch.cat([c, u]), 2.0), torch.tensor([[0.0, 6.0]]))


def test_cfg_changes_samples_and_needs_the_null_class():
    m = tiny()
    y = torch.tensor([0, 1, 2])
    assert not torch.equal(generate(m, y, cfg=1.0, seed=0), generate(m, y, cfg=3.0, seed=0))
    with pytest.raises(ValueError, match="class_dropout=0"):
        generate(tiny(class_dropout=0.0), y, cfg=1.5)
    with pytest.raises(ValueError, match="< 1"):
        generate(m, y, cfg=0.5)


def test_null_class_row_and_label_dropout():
    m = tiny()
    assert m.cls.num_embeddings == 6 and m.null_class == 5
    g = torch.Generator().manual_seed(0)
    dropped = m.drop_labels(torch.zeros(10_000, dtype=torch.long), g)
    assert 0.08 < (dropped == 5).float().mean() < 0.12  # class dropout 0.1
    assert tiny(class_dropout=0.0).cls.num_embeddings == 5


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).sum() == 2  # 0.5 + 0.3 reaches 0.7
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1  # never empty
    assert torch.isfinite(filter_logits(logits)).all()


def test_rope_prefix_rows_are_zero_as_llamagen_and_grid_is_2d():
    """LlamaGen's precompute_freqs_cis_2d prepends torch.zeros rows for the class prefix (cos 0 and sin 0,
    not an identity rotation): the class token's query and key come out zero, whatever they were."""
    t = rope_2d(4, 16, 10000.0)
    assert t.shape == (17, 8, 2)
    assert torch.equal(t[0], torch.zeros(8, 2))
    x = torch.randn(2, 17, 3, 16)
    r = apply_rope(x, t)
    assert torch.equal(r[:, 0], torch.zeros(2, 3, 16)) and r[:, 1:].abs().sum() > 0
    # code (row 1, col 2) = position 1 + 1 * 4 + 2: angles row x f_j on the first 4 pairs, col x f_j on the rest
    f = 1.0 / 10000.0 ** (torch.arange(4, dtype=torch.float64) * 2 / 8)
    ang = torch.cat([1 * f, 2 * f])
    assert torch.allclose(t[1 + 4 + 2], torch.stack([ang.cos(), ang.sin()], -1).float())
    # tokens of one row share the row half of the angles; tokens of one column share the column half
    assert torch.equal(t[1 + 0, :4], t[1 + 3, :4]) and not torch.equal(t[1 + 0, 4:], t[1 + 3, 4:])
    assert torch.equal(t[1 + 1, 4:], t[1 + 5, 4:])


@pytest.mark.parametrize("name, millions", [("B", 111), ("L", 343), ("XL", 775)])
def test_llamagen_sizes_on_meta_device(name, millions):
    with torch.device("meta"):  # counts parameters of the paper-scale models without allocating them
        model = GPT(spec(name))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - millions) < 1  # LlamaGen GPT-B/L/XL at vocab 16,384 (the paper's Table 2 sizes)


def test_presets_and_bad_specs():
    assert (PRESETS["L"].dim, PRESETS["L"].layers, PRESETS["L"].heads) == (1024, 24, 16)
    assert (PRESETS["XL"].dim, PRESETS["XL"].layers, PRESETS["XL"].heads) == (1280, 36, 20)
    with pytest.raises(ValueError, match="unknown AR model"):
        spec("XXL")
    with pytest.raises(ValueError, match="square"):
        GPT(spec("tiny", tokens=15))
