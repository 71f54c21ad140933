"""Usage metrics on hand-built index sets."""
import math

import torch

from fvq.eval.metrics import UsageCounter, WindowedUsage, group_collapse_hint, perplexity


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
