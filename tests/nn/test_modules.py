"""Encoders, decoders and heads: shapes, chunked == one pass, equivalence with torch cells."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recurra.data.schema import RecurraError
from recurra.nn.modules import (
    Attention,
    DistributionHead,
    EncoderSpec,
    ForecastNet,
    RecurrentCell,
    RecurrentEncoder,
    WindowSpec,
    patches,
    window_level,
)

torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy CPU


def _inputs(batch=3, steps=10, features=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, features, generator=generator)
    observed = torch.rand(batch, steps, features, generator=generator) > 0.3
    delta = torch.rand(batch, steps, features, generator=generator) * 3
    return x, observed, delta


ENCODERS = [
    EncoderSpec("lstm", 2, 8, num_layers=2),
    EncoderSpec("gru", 2, 8, num_layers=2, residual=False),
    EncoderSpec("lstm", 2, 8, layer_norm=True),
    EncoderSpec("gru", 2, 8, num_layers=2, recurrent_dropout=0.3, layer_norm=True),
    EncoderSpec("lstm", 2, 8, learn_initial_state=True, bidirectional=True),
    EncoderSpec("grud", 2, 8, num_layers=2),
]


@pytest.mark.parametrize("spec", ENCODERS, ids=lambda s: f"{s.cell}-ln{s.layer_norm}-"
                         f"rd{s.recurrent_dropout}-bi{s.bidirectional}")
def test_encoder_shapes_and_chunked_equals_one_pass(spec):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(spec).eval()
    x, observed, delta = _inputs()
    output, state = encoder(x, observed, delta)
    directions = 2 if spec.bidirectional else 1
    assert output.shape == (3, 10, directions * 8)
    assert encoder.last_hidden(output).shape == (3, directions * 8)
    if spec.bidirectional:
        return  # a backward pass cannot be streamed
    first, carried = encoder(x[:, :4], observed[:, :4], delta[:, :4])
    second, final = encoder(x[:, 4:], observed[:, 4:], delta[:, 4:], carried)
    torch.testing.assert_close(torch.cat([first, second], dim=1), output)
    flat = lambda s: torch.cat([t.reshape(-1) for t in _leaves(s)])
    torch.testing.assert_close(flat(final), flat(state))


def _leaves(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_custom_cell_matches_torch_cell_with_same_weights(cell):
    torch.manual_seed(0)
    reference = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(3, 5)
    custom = RecurrentCell(cell, 3, 5, layer_norm=False)
    with torch.no_grad():
        custom.input_map.weight.copy_(reference.weight_ih)
        custom.input_map.bias.copy_(reference.bias_ih)
        custom.hidden_map.weight.copy_(reference.weight_hh)
        custom.hidden_map.bias.copy_(reference.bias_hh)
    x, h, c = torch.randn(4, 3), torch.randn(4, 5), torch.randn(4, 5)
    if cell == "lstm":
        expected, got = reference(x, (h, c)), custom(x, (h, c))
        torch.testing.assert_close(got[0], expected[0])
        torch.testing.assert_close(got[1], expected[1])
    else:
        torch.testing.assert_close(custom(x, h), reference(x, h))


def test_recurrent_dropout_only_in_training_and_eval_is_deterministic():
    torch.manual_seed(0)
    encoder = RecurrentEncoder(EncoderSpec("lstm", 2, 8, recurrent_dropout=0.5))
    x, observed, delta = _inputs()
    encoder.eval()
    a, _ = encoder(x, observed, delta)
    b, _ = encoder(x, observed, delta)
    torch.testing.assert_close(a, b)
    encoder.train()
    c, _ = encoder(x, observed, delta)
    assert not torch.allclose(a, c)


def test_learned_initial_state_gets_gradients():
    encoder = RecurrentEncoder(EncoderSpec("gru", 2, 4, learn_initial_state=True))
    output, _ = encoder(*_inputs())
    output.sum().backward()
    assert encoder.initial_state.grad is not None
    frozen = RecurrentEncoder(EncoderSpec("gru", 2, 4))
    assert not frozen.initial_state.requires_grad


def test_grud_rejects_unsupported_options():
    with pytest.raises(RecurraError, match="cell 'grud' supports neither bidirectional"):
        RecurrentEncoder(EncoderSpec("grud", 2, 4, bidirectional=True))
    with pytest.raises(RecurraError, match=r"cell \('rnn'\) must be one of"):
        RecurrentEncoder(EncoderSpec("rnn", 2, 4))


def test_quantile_head_is_monotone_and_pinball_is_hand_computed():
    torch.manual_seed(0)
    head = DistributionHead("quantile", 4, 2, quantiles=(0.1, 0.5, 0.9))
    params = head(torch.randn(5, 6, 4) * 10)
    assert params.shape == (5, 6, 2, 3)
    assert bool((params.diff(dim=-1) >= 0).all())
    # one output, quantiles [0, 1, 2] against target 1.5: (0.1*1.5 + 0.5*0.5 + 0.1*0.5) / 3
    fixed = torch.tensor([[[0.0, 1.0, 2.0]]])
    loss = head.loss(fixed, torch.tensor([[1.5]]), torch.tensor([[True]]))
    assert math.isclose(float(loss), (0.15 + 0.25 + 0.05) / 3, rel_tol=1e-6)
    torch.testing.assert_close(head.point(fixed), torch.tensor([[1.0]]))


def test_loss_ignores_unobserved_targets():
    head = DistributionHead("gaussian", 4, 1)
    params = head(torch.randn(2, 3, 4))
    target = torch.randn(2, 3, 1)
    mask = torch.tensor([[[True], [False], [True]], [[False], [True], [True]]])
    changed = torch.where(mask, target, torch.full_like(target, 1e6))
    torch.testing.assert_close(head.loss(params, target, mask), head.loss(params, changed, mask))


def test_gaussian_and_student_quantiles_and_nll():
    gaussian = DistributionHead("gaussian", 1, 1)
    params = torch.tensor([[[1.0, 2.0]]])
    q = gaussian.quantiles(params, (0.1, 0.5, 0.9))
    torch.testing.assert_close(q[..., 1], torch.tensor([[1.0]]))
    assert math.isclose(float(q[..., 2]), 1.0 + 2.0 * 1.2815515655, rel_tol=1e-5)
    expected = -torch.distributions.Normal(1.0, 2.0).log_prob(torch.tensor(0.0))
    assert math.isclose(float(gaussian.loss(params, torch.tensor([[0.0]]),
                                            torch.tensor([[True]]))), float(expected),
                        rel_tol=1e-6)
    student = DistributionHead("student_t", 1, 1)
    params = torch.tensor([[[0.0, 1.0, 5.0]]])
    q = student.quantiles(params, (0.1, 0.9))
    assert math.isclose(float(q[..., 1]), 1.475884, rel_tol=1e-5)  # t.ppf(0.9, 5)
    assert float(q[..., 0]) == pytest.approx(-float(q[..., 1]))


@pytest.mark.parametrize("kind", ["luong", "bahdanau"])
def test_attention_returns_convex_combination_of_memory(kind):
    attention = Attention(kind, 4, 6)
    memory = torch.ones(2, 5, 6) * torch.arange(5.0).view(1, 5, 1)
    context = attention(torch.randn(2, 4), memory)
    assert context.shape == (2, 6)
    assert bool((context >= 0).all() and (context <= 4).all())


@pytest.mark.parametrize("decoder", ["direct", "seq2seq", "attention"])
def test_forecast_net_shapes(decoder):
    spec = EncoderSpec("lstm", 2 + 3, 8)
    head = DistributionHead("quantile", 8, 2, (0.1, 0.5, 0.9))
    net = ForecastNet(spec, 2, 3, horizon=4, decoder=decoder, head=head)
    x, observed, delta = _inputs()
    params, state = net(x, observed, delta, covariates=torch.randn(3, 10, 3),
                        future=torch.randn(3, 4, 3), last=torch.randn(3, 2))
    assert params.shape == (3, 4, 2, 3)
    assert len(state) == 1


def test_teacher_forcing_uses_truth_only_when_asked():
    torch.manual_seed(0)
    head = DistributionHead("gaussian", 8, 1)
    net = ForecastNet(EncoderSpec("gru", 1, 8), 1, 0, horizon=3, decoder="seq2seq", head=head)
    summary, last = torch.randn(2, 8), torch.randn(2, 1)
    mask = torch.ones(2, 3, 1, dtype=torch.bool)
    a = net.decode(summary, last, None, torch.zeros(2, 3, 1), mask, teacher_prob=1.0)
    b = net.decode(summary, last, None, torch.ones(2, 3, 1), mask, teacher_prob=1.0)
    c = net.decode(summary, last, None, torch.ones(2, 3, 1), mask, teacher_prob=0.0)
    free = net.decode(summary, last, None)
    torch.testing.assert_close(a[:, 0], b[:, 0])        # step 1 reads only `last`
    assert not torch.allclose(a[:, 1:], b[:, 1:])       # later steps read the truth
    torch.testing.assert_close(c, free)                 # probability 0: own predictions


def _window_net(kind="point", n_channels=3, targets=3, **window):
    torch.manual_seed(0)
    spec = WindowSpec(lookback=8, n_channels=n_channels, **window)
    n_in = 1 if spec.channel_independent else n_channels
    n_out = 1 if spec.channel_independent else targets
    head = DistributionHead(kind, 8, n_out, (0.1, 0.5, 0.9))
    return ForecastNet(EncoderSpec("gru", n_in * spec.patch_length, 8), n_out, 0,
                       horizon=4, decoder="direct", head=head, window=spec).eval()


def test_point_head_is_squared_error_and_its_quantiles_are_the_point():
    head = DistributionHead("point", 4, 2)
    params = torch.tensor([[[1.0], [2.0]]])                      # (1, O=2, P=1)
    loss = head.loss(params, torch.tensor([[3.0, 2.5]]), torch.ones(1, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx((4.0 + 0.25) / 2)
    assert head.quantiles(params, (0.1, 0.9)).tolist() == [[[1.0, 1.0], [2.0, 2.0]]]


@pytest.mark.parametrize("kind", ["quantile", "gaussian", "point"])
def test_start_at_zero_makes_the_point_forecast_zero(kind):
    head = DistributionHead(kind, 4, 2, (0.1, 0.5, 0.9))
    head.start_at_zero()
    point = head.point(head(torch.randn(5, 4)))
    torch.testing.assert_close(point, torch.zeros(5, 2))


def test_window_level_and_patches():
    x = torch.tensor([[[1.0], [2.0], [3.0], [6.0]]])            # (1, 4, 1)
    level, spread = window_level(x, "last")
    assert level.item() == 6.0 and spread.item() == 1.0
    level, spread = window_level(x, "revin")
    assert level.item() == 3.0 and spread.item() == pytest.approx(math.sqrt(3.5 + 1e-5))
    assert patches(torch.arange(12.0).reshape(1, 6, 2), 3).tolist() == [
        [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]]]
    with pytest.raises(RecurraError, match=r"window length \(6\) must be a multiple of "
                                           r"patch_length \(4\)"):
        patches(torch.zeros(1, 6, 2), 4)


@pytest.mark.parametrize("normalization,kind", [("revin", "point"), ("revin", "quantile"),
                                                ("last", "gaussian")])
def test_window_normalisation_is_undone_on_the_output(normalization, kind):
    """Instance normalisation makes the forecast equivariant: f(a x + b) = a f(x) + b
    (revin, per channel); f(x + b) = f(x) + b (last)."""
    net = _window_net(kind, normalization=normalization, patch_length=2, linear_skip=True)
    x, observed, delta = _inputs(batch=2, steps=8, features=3)
    scale = torch.tensor([2.0, 0.5, 3.0]) if normalization == "revin" else torch.ones(3)
    shift = torch.tensor([10.0, -4.0, 0.5])
    with torch.no_grad():
        base = net.forecast_window(x, observed, delta)
        moved = net.forecast_window(x * scale + shift, observed, delta)
    if kind == "gaussian":  # location shifts, scale unchanged
        torch.testing.assert_close(moved[..., 0], base[..., 0] + shift, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(moved[..., 1], base[..., 1], rtol=1e-4, atol=1e-4)
    else:                   # every quantile / the point: a z + b per channel
        torch.testing.assert_close(moved, base * scale[:, None] + shift[:, None],
                                   rtol=1e-4, atol=1e-4)


def test_channel_independent_equals_each_channel_alone():
    net = _window_net(normalization="last", channel_independent=True, patch_length=4,
                      linear_skip=True)
    x, observed, delta = _inputs(batch=2, steps=8, features=3)
    with torch.no_grad():
        joint = net.forecast_window(x, observed, delta)         # (B, N, F, P)
        alone = [net.forecast_window(x[..., j:j + 1], observed[..., j:j + 1],
                                     delta[..., j:j + 1]) for j in range(3)]
    assert joint.shape == (2, 4, 3, 1)
    torch.testing.assert_close(joint, torch.cat(alone, dim=2))


def test_linear_skip_alone_at_start_and_needs_full_windows():
    net = _window_net(targets=1, normalization="last", linear_skip=True)
    x, observed, delta = _inputs(batch=2, steps=8, features=3)
    with torch.no_grad():
        params = net.forecast_window(x, observed, delta, targets=[1])
        skip = net.skip((x - x[:, -1:]).transpose(1, 2)).transpose(1, 2) + x[:, -1:]
    torch.testing.assert_close(params[..., 0], skip[..., [1]])
    with pytest.raises(RecurraError, match=r"linear_skip needs windows of lookback \(8\)"):
        net.forecast_window(x[:, 2:], observed[:, 2:], delta[:, 2:])


@pytest.mark.parametrize("kind", ["quantile", "point"])
def test_linear_decoder_shapes_and_zero_start_with_a_skip(kind):
    torch.manual_seed(0)
    head = DistributionHead(kind, 8, 1, (0.1, 0.5, 0.9))
    spec = WindowSpec(lookback=8, n_channels=2, channel_independent=True, linear_skip=True)
    net = ForecastNet(EncoderSpec("lstm", 1 + 3, 8), 1, 3, horizon=4, decoder="linear",
                      head=head, window=spec).eval()
    x, observed, delta = _inputs(batch=2, steps=8, features=2)
    with torch.no_grad():
        params = net.forecast_window(x, observed, delta, torch.randn(2, 8, 3),
                                     torch.randn(2, 4, 3))
        skip = net.skip(x.transpose(1, 2)).transpose(1, 2)          # (B, N, F)
    assert params.shape == (2, 4, 2, head.n_params)
    torch.testing.assert_close(head.point(params), skip)         # decoder starts at zero
