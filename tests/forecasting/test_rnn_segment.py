"""The SegRNN-style ``"segment"`` decoder and the repeat-last start of a zero linear skip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recurra.data.schema import Y_HAT
from recurra.forecasting.config import EncoderConfig, OutputConfig, WindowConfig
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.heads import DistributionHead
from recurra.nn.modules import EncoderSpec, ForecastNet, SegmentDecoder, WindowSpec
from recurra.nn.train import TrainConfig
from tests.conftest import make_frame

torch.set_num_threads(1)


def test_segment_decoder_shapes_crop_and_channel_embedding():
    torch.manual_seed(0)
    decoder = SegmentDecoder(summary_size=6, hidden_size=8, horizon=10, segment_length=4,
                             n_channels=3, out_size=2, dropout=0.0)
    assert decoder.n_segments == 3                       # ceil(10 / 4)
    summary = torch.randn(5, 6)
    out = decoder(summary, torch.tensor([0, 1, 2, 0, 1]))
    assert out.shape == (5, 10, 2)
    same = decoder(summary[:1].repeat(2, 1), torch.tensor([0, 1]))
    assert not torch.allclose(same[0], same[1])          # the channel embedding matters
    assert torch.equal(decoder(summary), decoder(summary, torch.zeros(5, dtype=torch.long)))


@pytest.mark.parametrize("decoder", ["segment", "linear"])
def test_zero_skip_and_zero_head_start_as_repeat_last(decoder):
    torch.manual_seed(0)
    head = DistributionHead("point", 8, 1)
    window = WindowSpec("last", True, 4, True, 16, 3)
    net = ForecastNet(EncoderSpec("gru", 4, 8), 1, 0, 6, decoder, head, window=window)
    with torch.no_grad():
        net.skip.weight.zero_()
        net.skip.bias.zero_()
    x = torch.randn(2, 16, 3)
    params = net.forecast_window(x, torch.ones_like(x, dtype=torch.bool), torch.ones_like(x))
    assert params.shape == (2, 6, 3, 1)
    expected = x[:, -1:, :].expand(2, 6, 3)
    torch.testing.assert_close(params[..., 0], expected)


def test_forecaster_with_segment_decoder_streams_like_one_pass():
    frame = make_frame(n_series=2, n_steps=90, n_channels=2, gap_share=0.1, seed=5)
    times = sorted(frame["timestamp"].unique().to_list())
    train = frame.filter(frame["timestamp"] < times[75])
    new = frame.filter(frame["timestamp"] >= times[75])
    config = ForecasterConfig(lookback=16, horizon=6, calendar=False,
                              train=TrainConfig(max_epochs=1, batch_size=16, device="cpu", seed=0),
                              encoder=EncoderConfig(cell="lstm", hidden_size=8), decoder="segment",
                              output=OutputConfig(kind="point", loss="huber"),
                              window=WindowConfig(normalization="last", channel_independent=True,
                                                  patch_length=4, linear_skip=True,
                                                  linear_skip_ridge=float("inf"),
                                                  linear_skip_intercept=False))
    model = RNNForecaster(config).fit(train)
    one_pass = model.predict(frame=frame)[Y_HAT].to_numpy()
    np.testing.assert_allclose(model.update(new)[Y_HAT].to_numpy(), one_pass,
                               rtol=1e-5, atol=1e-6)
