"""split_state: every batch entry of a recurrent state, as select_state gives one."""

from __future__ import annotations

from typing import NamedTuple

import torch

from recurra.nn.state import cat_states, select_state, split_state


class Pair(NamedTuple):
    h: torch.Tensor
    c: torch.Tensor


def test_split_state_equals_select_state_for_every_entry():
    torch.manual_seed(0)
    states = [torch.randn(2, 5, 3), torch.randn(5, 4), (torch.randn(1, 5, 2), torch.randn(5, 2)),
              Pair(torch.randn(2, 5, 3), torch.randn(2, 5, 3))]
    for state in states:
        parts = split_state(state)
        assert len(parts) == 5
        for index, part in enumerate(parts):
            expected = select_state(state, index)
            assert type(part) is type(expected)
            pairs = zip(part, expected, strict=True) if isinstance(part, tuple) \
                else [(part, expected)]
            for got, want in pairs:
                assert got.shape == want.shape and torch.equal(got, want)
        joined = cat_states(parts)
        flat = zip(joined, state, strict=True) if isinstance(state, tuple) else [(joined, state)]
        assert all(torch.equal(a, b) for a, b in flat)
