"""The configuration of :class:`recurra.forecasting.rnn.RNNForecaster`: a frozen dataclass
composed of small frozen parts, each checked in its ``__post_init__`` with errors naming the
field, the value and the rule (checks across parts are in :class:`ForecasterConfig`).

==================  ============================================================  =========
part                what it holds                                                 shorthand
==================  ============================================================  =========
``encoder``         :class:`EncoderConfig`: cell, size, dropout, layer norm...    ``cell``
``decoder``         :class:`DecoderConfig`: direct / seq2seq / attention / ...    ``kind``
``output``          :class:`OutputConfig`: quantile / distribution / point head   ``kind``
``interval``        :class:`~recurra.forecasting.intervals.IntervalConfig`        ``method``
``window``          :class:`WindowConfig`: window normalisation, patches, skip    -
``tbptt``           :class:`TBPTTConfig`: stateful chunk length, segments         -
``train``           :class:`recurra.nn.train.TrainConfig`: the training loop      -
==================  ============================================================  =========

A shorthand is the part given as its main field alone: ``decoder="seq2seq"``,
``output="point"``, ``interval="conformal"`` (in Python and in TOML).  Configs written before
the split (flat keys such as ``hidden_size = 16``) still build: :data:`FLAT_KEYS` moves each
key into its part, with a ``FutureWarning`` naming both (:mod:`recurra.data.config_tree`).

>>> ForecasterConfig(encoder=EncoderConfig(cell="gru", hidden_size=16), horizon=12,
...                  decoder="seq2seq", train=TrainConfig(max_epochs=5))     # doctest: +SKIP
>>> ForecasterConfig.from_flat(cell="gru", hidden_size=16)   # old keys, with a warning
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from recurra.data.config_tree import build_config, coerce_part
from recurra.data.schema import RecurraError
from recurra.forecasting.intervals import IntervalConfig
from recurra.forecasting.windows import SCALERS
from recurra.nn.modules import ATTENTIONS, CELLS, NORMALIZATIONS
from recurra.nn.train import TrainConfig

DECODERS = ("direct", "seq2seq", "attention", "linear", "segment")
OUTPUTS = ("quantile", "gaussian", "student_t", "point")
TEACHER_FORCING = ("always", "linear", "inverse_sigmoid", "never")
LOSSES = ("mse", "mae", "huber")
INTERVALS = ("model", "conformal", "adaptive")
TARGET_TRANSFORMS = ("none", "log_return", "difference")  # recurra.forecasting.transforms


def _choice(part: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecurraError(f"{part}.{name} ({value!r}) must be one of {list(choices)}")


def _positive_int(part: str, name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecurraError(f"{part}.{name} ({value!r}) must be an integer >= {minimum}")


@dataclass(frozen=True)
class EncoderConfig:
    """The recurrent encoder.

    cell : ``"lstm"``, ``"gru"`` or ``"grud"``. hidden_size, num_layers : encoder size.
    dropout : on encoder inputs/outputs and in the decoder. recurrent_dropout : variational
        dropout on the hidden state (custom cell path). layer_norm : layer-normalised gates.
    residual : residual connections between stacked layers. learn_initial_state : learn h0.
    """

    SHORTHAND: ClassVar[str] = "cell"

    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    layer_norm: bool = False
    residual: bool = True
    learn_initial_state: bool = False

    def __post_init__(self) -> None:
        _choice("encoder", "cell", self.cell, CELLS)
        for name in ("hidden_size", "num_layers"):
            _positive_int("encoder", name, getattr(self, name))
        for name in ("dropout", "recurrent_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise RecurraError(f"encoder.{name} ({getattr(self, name)}) must be in [0, 1)")


@dataclass(frozen=True)
class DecoderConfig:
    """How the encoder summary becomes N forecast steps.

    kind : ``"direct"`` (MLP to all steps), ``"seq2seq"`` (autoregressive), ``"attention"``
        (seq2seq attending over the encoder outputs; stateless only), ``"linear"`` (one
        linear map from the summary to all steps) or ``"segment"`` (SegRNN's parallel
        decoding: segments of ``window.patch_length`` steps, each from position + channel
        embeddings and one GRU-cell step from the summary).
    attention : ``"luong"`` or ``"bahdanau"``.
    teacher_forcing : scheduled sampling for seq2seq: the probability of feeding the truth
        falls over training, ``"linear"`` (1 -> 0) or ``"inverse_sigmoid"`` (k / (k +
        exp(epoch / k)), k = ``teacher_forcing_k``); ``"always"`` or ``"never"``.
    forecast_from_last : the direct decoder forecasts the change from the last
        (forward-filled) target value of each step: a causal level per step that works in
        stateful training too (needs ``kind="direct"``, no window options).
    """

    SHORTHAND: ClassVar[str] = "kind"

    kind: str = "direct"
    attention: str = "luong"
    teacher_forcing: str = "linear"
    teacher_forcing_k: float = 3.0
    forecast_from_last: bool = False

    def __post_init__(self) -> None:
        _choice("decoder", "kind", self.kind, DECODERS)
        _choice("decoder", "attention", self.attention, ATTENTIONS)
        _choice("decoder", "teacher_forcing", self.teacher_forcing, TEACHER_FORCING)
        if self.teacher_forcing_k <= 0:
            raise RecurraError(f"decoder.teacher_forcing_k ({self.teacher_forcing_k}) must "
                               "be > 0")
        if self.forecast_from_last and self.kind != "direct":
            raise RecurraError(f"decoder.forecast_from_last needs kind 'direct' (got "
                               f"{self.kind!r})")


@dataclass(frozen=True)
class OutputConfig:
    """The forecast head and its loss.

    kind : ``"quantile"`` (pinball loss), ``"gaussian"`` or ``"student_t"`` (NLL), or
        ``"point"`` (``loss``; without calibrated intervals every quantile column equals
        y_hat).
    loss : training loss of a ``"point"`` output: ``"mse"`` (squared error), ``"mae"``
        (absolute error: the forecast estimates the median) or ``"huber"`` (squared below
        ``huber_delta``, absolute above, in scaled units).
    """

    SHORTHAND: ClassVar[str] = "kind"

    kind: str = "quantile"
    loss: str = "mse"
    huber_delta: float = 1.0

    def __post_init__(self) -> None:
        _choice("output", "kind", self.kind, OUTPUTS)
        _choice("output", "loss", self.loss, LOSSES)
        if self.loss != "mse" and self.kind != "point":
            raise RecurraError(f"output.loss ({self.loss!r}) applies to kind 'point' only "
                               f"(kind {self.kind!r} has its own loss): set loss='mse' or "
                               "kind='point'")
        if not self.huber_delta > 0:
            raise RecurraError(f"output.huber_delta ({self.huber_delta}) must be > 0")


@dataclass(frozen=True)
class WindowConfig:
    """How a stateless LSTM/GRU reads its look-back window (see
    :class:`recurra.nn.modules.WindowSpec`).

    normalization : ``"none"``, ``"last"`` (subtract each window's last value) or
        ``"revin"`` (window mean / std), undone on the output.
    channel_independent : each channel a separate univariate sample sharing the weights
        (needs ``target_channels=None``). patch_length : steps per encoder step (divides
        ``lookback``). linear_skip : a linear look-back -> horizon shortcut added to the
        network's location; the network then starts as a zero correction.
    linear_skip_ridge : ridge penalty of a closed-form initialisation of the skip from the
        training windows (None = random init; ``inf`` = all zeros, which with
        ``normalization="last"`` makes the initial model repeat-last); with ``validation``
        the initial model (the ridge alone) is kept when no epoch beats it.
    linear_skip_intercept : fit the ridge initialisation with an intercept (a mean drift).
    """

    normalization: str = "none"
    channel_independent: bool = False
    patch_length: int = 1
    linear_skip: bool = False
    linear_skip_ridge: float | None = None
    linear_skip_intercept: bool = True

    def __post_init__(self) -> None:
        _choice("window", "normalization", self.normalization, NORMALIZATIONS)
        _positive_int("window", "patch_length", self.patch_length)
        if self.linear_skip_ridge is not None and (
                not self.linear_skip or not self.linear_skip_ridge >= 0):
            raise RecurraError(f"window.linear_skip_ridge ({self.linear_skip_ridge}) must be "
                               f">= 0 and needs linear_skip=True (got {self.linear_skip})")

    @property
    def active(self) -> bool:
        """True when any window option (normalisation, channel independence, patches,
        linear skip) is on."""
        return (self.normalization != "none" or self.channel_independent
                or self.patch_length > 1 or self.linear_skip)


@dataclass(frozen=True)
class TBPTTConfig:
    """Stateful training (``stateful=True``): truncated BPTT over consecutive chunks.

    length : steps per chunk (gradients stop at chunk boundaries; the state carries on).
    segments : cut each training series into this many consecutive segments (each from a
        fresh state) so that one long series still fills a stateful batch.
    burn_in : steps of the preceding segment that each segment (after a series' first)
        replays to warm up its state; their targets are excluded from the loss.
    """

    length: int = 64
    segments: int = 1
    burn_in: int = 0

    def __post_init__(self) -> None:
        _positive_int("tbptt", "length", self.length)
        _positive_int("tbptt", "segments", self.segments)
        _positive_int("tbptt", "burn_in", self.burn_in, minimum=0)


@dataclass(frozen=True)
class ForecasterConfig:
    """Everything an :class:`RNNForecaster` needs: top-level lengths and data options plus
the parts of the module docstring; checked in ``__post_init__``.

    encoder : the recurrent encoder (:class:`EncoderConfig`; shorthand: its ``cell``).
    decoder : how the summary becomes N steps (:class:`DecoderConfig`; shorthand: ``kind``).
    output : the forecast head and its loss (:class:`OutputConfig`; shorthand: ``kind``).
    interval : where the quantile columns come from
        (:class:`~recurra.forecasting.intervals.IntervalConfig`; shorthand: ``method``,
        ``"model"`` (the head), ``"conformal"`` or ``"adaptive"``; its ``levels`` are the
        forecaster's ``quantiles``).
    window : window options of a stateless LSTM/GRU (:class:`WindowConfig`).
    tbptt : chunks of stateful training (:class:`TBPTTConfig`).
    train : the training loop (:class:`recurra.nn.train.TrainConfig`).
    quantiles : forecast quantile levels (columns ``q10``...); y_hat is the median (or mean).
        With ``interval.method`` ``"conformal"`` or ``"adaptive"`` the bands are calibrated
        per series on the validation rows (:mod:`recurra.forecasting.intervals`); fit then
        needs ``validation`` and ``"adaptive"`` one symmetric pair ``(q, 1 - q)``, optionally
        with 0.5, whose coverage ``1 - 2q`` is the target.
    lookback, horizon : window lengths (steps). stride : between training windows.
    max_windows_per_epoch : random subset of training windows per epoch (None = all); with
        ``stateful`` a budget of supervised steps: whole random groups of ``batch_size``
        series until their steps reach it (at least one group).
    stateful : stateful training with truncated BPTT over chunks (``tbptt``).
    target_channels : channels to forecast (None = all); the others are past covariates.
    calendar : calendar covariates on/off. scaler : ``"standard"``, ``"robust"``, ``"none"``.
    target_transform : ``"none"``, ``"log_return"`` or ``"difference"``: the model learns
        on (log) returns of every channel (scaled per series on the training returns) and
        forecasts come back in level units, cumulated from the last observed value
        (:mod:`recurra.forecasting.transforms`); log returns need positive values.
    """

    FLAT_KEYS: ClassVar[dict[str, str]] = {
        **{name: f"encoder.{name}" for name in (
            "cell", "hidden_size", "num_layers", "dropout", "recurrent_dropout",
            "layer_norm", "residual", "learn_initial_state")},
        "attention": "decoder.attention", "teacher_forcing": "decoder.teacher_forcing",
        "teacher_forcing_k": "decoder.teacher_forcing_k",
        "forecast_from_last": "decoder.forecast_from_last",
        "loss": "output.loss", "huber_delta": "output.huber_delta",
        "interval_min_residuals": "interval.min_residuals",
        "adaptive_gamma": "interval.adaptive_gamma",
        **{name: f"window.{name}" for name in (
            "normalization", "channel_independent", "patch_length", "linear_skip",
            "linear_skip_ridge", "linear_skip_intercept")},
        "tbptt_length": "tbptt.length", "stateful_segments": "tbptt.segments",
        "stateful_burn_in": "tbptt.burn_in",
    }

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    interval: IntervalConfig = field(default_factory=lambda: IntervalConfig("model", None))
    window: WindowConfig = field(default_factory=WindowConfig)
    tbptt: TBPTTConfig = field(default_factory=TBPTTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    lookback: int = 48
    horizon: int = 24
    stride: int = 1
    max_windows_per_epoch: int | None = None
    stateful: bool = False
    target_channels: tuple[str, ...] | None = None
    calendar: bool = True
    scaler: str = "standard"
    target_transform: str = "none"

    @classmethod
    def from_flat(cls, **values: Any) -> ForecasterConfig:
        """A config from keyword values in the old flat form (``hidden_size=16``) or the
        nested one; each flat key warns with its new place."""
        return build_config(cls, values, where="ForecasterConfig")

    def __post_init__(self) -> None:
        for name, part in (("encoder", EncoderConfig), ("decoder", DecoderConfig),
                           ("output", OutputConfig), ("interval", IntervalConfig),
                           ("window", WindowConfig), ("tbptt", TBPTTConfig),
                           ("train", TrainConfig)):
            coerce_part(self, name, part)
        _choice("ForecasterConfig", "scaler", self.scaler, SCALERS)
        _choice("ForecasterConfig", "target_transform", self.target_transform,
                TARGET_TRANSFORMS)
        for name in ("lookback", "horizon", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecurraError(f"{name} ({value!r}) must be an integer >= 1")
        levels = tuple(float(q) for q in self.quantiles)
        if not levels or any(not 0 < q < 1 for q in levels) or list(levels) != sorted(
                set(levels)):
            raise RecurraError(f"quantiles ({self.quantiles}) must be strictly increasing "
                               "levels in (0, 1)")
        if self.max_windows_per_epoch is not None and self.max_windows_per_epoch < 1:
            raise RecurraError(f"max_windows_per_epoch ({self.max_windows_per_epoch}) must "
                               "be >= 1 or None")
        if self.target_channels is not None and not self.target_channels:
            raise RecurraError("target_channels (()) must name at least one channel or be None")
        self._check_across_parts(levels)

    def _check_across_parts(self, levels: tuple[float, ...]) -> None:
        if self.decoder.forecast_from_last and self.windowed:
            raise RecurraError("decoder.forecast_from_last needs no window options "
                               f"(window: {self.window})")
        if self.decoder.kind == "attention" and self.stateful:
            raise RecurraError("decoder 'attention' needs stateless windows: set stateful="
                               "False or decoder 'direct'/'seq2seq'")
        if self.interval.method in ("conformal", "adaptive") and self.stateful:
            raise RecurraError(f"interval {self.interval.method!r} needs stateless windows "
                               "(stateful=False): it calibrates on validation windows")
        # the interval's levels are the quantiles: its own rules check them (adaptive: one
        # symmetric pair), then the part keeps levels=None so the two cannot disagree
        try:
            dataclasses.replace(self.interval, levels=levels)
        except RecurraError as error:
            raise RecurraError(f"quantiles ({self.quantiles}): {error}") from None
        object.__setattr__(self, "interval", dataclasses.replace(self.interval, levels=None))
        if self.lookback % self.window.patch_length:
            raise RecurraError(f"lookback ({self.lookback}) must be a multiple of "
                               f"window.patch_length ({self.window.patch_length})")
        if self.windowed and (self.stateful or self.encoder.cell == "grud"):
            raise RecurraError(f"window options (normalization, channel_independent, "
                               f"patch_length, linear_skip) need stateless windows of an "
                               f"LSTM/GRU: got stateful={self.stateful}, cell "
                               f"{self.encoder.cell!r}")
        if self.window.channel_independent and self.target_channels is not None:
            raise RecurraError(f"window.channel_independent forecasts every channel: "
                               f"target_channels ({self.target_channels}) must be None")

    @property
    def windowed(self) -> bool:
        """True when any window option is on (:attr:`WindowConfig.active`)."""
        return self.window.active
