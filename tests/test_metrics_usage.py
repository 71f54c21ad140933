"""Usage metrics on hand-built index sets."""
import math

import pytest
import torch

from fvq.core import dist
from fvq.eval.metrics import OfficialUsage, UsageCounter, WindowedUsage, group_collapse_hint, perplexity


def test_usage_counter():
    u = UsageCounter(8)
    u.update(torch.tensor([0, 0, 1, 2]))
    u.update(torch.tensor([[2, 3]]))
    assert u.used == 4 and u.usage == 0.5 and u.dead_codes == 4 and u.tokens == 6
    assert u.tokens_per_code == 6 / 8
    assert u.histogram().tolist()[:4] == [2, 2, 1, 1]
    other = UsageCounter(8)
    other.update(torch.tensor([7]))
    assert u.merge(other).used == 5  # union over shards / ranks
    assert u.all_reduce().used == 5  # no process group: unchanged


def test_perplexity_bounds():
    assert perplexity(torch.tensor([5, 0, 0, 0])) == 1.0
    assert math.isclose(perplexity(torch.tensor([3, 3, 3, 3])), 4.0)
    assert perplexity(torch.zeros(4, dtype=torch.long)) == 0.0


def test_windowed_usage():
    w = WindowedUsage(4, window=2)
    w.update(torch.tensor([0, 1]), step=0)
    w.update(torch.tensor([2]), step=1)
    assert w.usage(1) == 0.75
    w.update(torch.tensor([2]), step=2)
    assert w.usage(2) == 0.25  # codes 0 and 1 (step 0) left the window; 2 was seen at step 2
    w2 = WindowedUsage(4, 2)
    w2.load_state_dict(w.state_dict())
    assert w2.usage(2) == 0.25


def test_group_collapse_hint():
    counts = torch.tensor([1, 1, 1, 0] * 4)
    assert "positions [3] of 4" in group_collapse_hint(counts, 4)
    assert group_collapse_hint(torch.ones(16), 4) == ""


def official_reference(size: int, steps) -> list[float]:
    """The official estimator spelled naively: a zero-filled buffer, each step appended at the end and only
    the last ``size`` entries kept; usage = distinct entries / K after every step."""
    buf, out = torch.zeros(size, dtype=torch.long), []
    for idx in steps:
        buf = torch.cat([buf, idx.reshape(-1)])[-size:]
        out.append(buf.unique().numel())
    return out


@pytest.mark.parametrize("k, size", [(4, 65536), (65535, 65536), (65536, 65537), (262144, 262145)])
def test_official_usage_buffer_length(k, size):
    assert OfficialUsage(k).size == size  # max(65,536, K + 1)


def test_official_usage_starts_with_code_zero_and_wraps():
    u = OfficialUsage(4)
    assert u.usage() == 0.25  # the zero-filled buffer: code 0 counts before any assignment
    u.update(torch.tensor([1, 2]))
    assert u.usage() == 0.75
    for _ in range(65):  # 65,000 assignments of code 1: 534 initial zeros are left
        u.update(torch.full((1000,), 1))
    assert u.usage() == 0.75  # 0, 1, 2
    u.update(torch.full((534,), 3))  # the last initial zeros leave
    assert u.usage() == 0.75 and u.pos == 0  # 1, 2, 3: the buffer holds exactly 65,536 assignments
    u.update(torch.full((2,), 3))  # pushes out the oldest two: codes 1 and 2 of the first step
    assert u.usage() == 0.5  # 1 (the 65,000 later ones) and 3
    u.update(torch.full((65535,), 3))  # written across the end of the ring
    assert u.usage() == 0.25 and u.pos == 1


def test_official_usage_k_plus_one_buffer():
    """K + 1 > 65,536: the buffer holds one more entry than K, so a stream that visits every code shows 100%
    while one initial zero is still inside, and loses code 0 only two assignments later."""
    k = 70000
    u = OfficialUsage(k)
    u.update(torch.arange(k))
    assert u.usage() == 1.0
    u.update(torch.tensor([5]))  # evicts the last initial zero; code 0 was assigned once and is still in
    assert u.usage() == 1.0
    u.update(torch.tensor([5]))  # evicts the assigned 0
    assert u.usage() == (k - 1) / k
    u.update(torch.arange(3 * u.size) % 7)  # a step longer than the buffer keeps its last ``size``
    assert u.usage() == 7 / k


def test_official_usage_equals_the_naive_buffer_on_random_steps():
    g = torch.Generator().manual_seed(0)
    k = 300
    steps = [torch.randint(0, k, (int(n),), generator=g) for n in torch.randint(1, 9000, (40,), generator=g)]
    steps = [torch.randint(0, k // 3, (1000,), generator=g)] + steps  # a third of the codes first
    u, got = OfficialUsage(k), []
    for s in steps:
        u.update(s.reshape(-1, 1))
        got.append(round(u.usage() * k))
    assert got == official_reference(u.size, steps)
    v = OfficialUsage(k)
    v.load_state_dict(u.state_dict())
    assert v.usage() == u.usage()


def test_official_usage_merged_over_ranks_equals_one_process(monkeypatch):
    """Two ranks, each holding one half of every global batch (fvq/core/loader.py): after all_reduce their
    buffers equal the 1-process buffer exactly, including after pending steps were dropped as too old."""
    g = torch.Generator().manual_seed(1)
    k, t = 5000, 3000  # 3,000 codes per rank per step: 22 steps fill one rank's 65,536
    one, ranks = OfficialUsage(k), [OfficialUsage(k), OfficialUsage(k)]
    for n_steps in (5, 30, 1):
        for _ in range(n_steps):
            batch = torch.randint(0, k, (2 * t,), generator=g)
            one.update(batch)
            for r, u in enumerate(ranks):
                u.update(batch[r * t:(r + 1) * t])
        gathered = torch.cat([torch.cat(u.pending) for u in ranks])  # what all_gather_cat would return
        monkeypatch.setattr(dist, "world", lambda: 2)
        monkeypatch.setattr(dist, "all_gather_cat", lambda _: gathered)
        for u in ranks:
            u.all_reduce()
        monkeypatch.undo()
        for u in ranks:
            assert torch.equal(u.state_dict()["buffer"], one.state_dict()["buffer"]) and u.pos == one.pos
    assert ranks[0].usage() == one.usage()
