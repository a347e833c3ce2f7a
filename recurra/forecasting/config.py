"""The configuration of :class:`recurra.forecasting.rnn.RNNForecaster`: one frozen dataclass,
checked in ``__post_init__`` with errors naming the field, the value and the rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from recurra.data.schema import RecurraError
from recurra.forecasting.windows import SCALERS
from recurra.nn.modules import ATTENTIONS, CELLS, NORMALIZATIONS
from recurra.nn.train import TrainConfig

DECODERS = ("direct", "seq2seq", "attention", "linear", "segment")
OUTPUTS = ("quantile", "gaussian", "student_t", "point")
TEACHER_FORCING = ("always", "linear", "inverse_sigmoid", "never")
LOSSES = ("mse", "mae", "huber")
INTERVALS = ("model", "conformal", "adaptive")
TARGET_TRANSFORMS = ("none", "log_return", "difference")  # recurra.forecasting.transforms


@dataclass(frozen=True)
class ForecasterConfig:
    """Everything an :class:`RNNForecaster` needs; checked in ``__post_init__``.

    cell : ``"lstm"``, ``"gru"`` or ``"grud"``. hidden_size, num_layers : encoder size.
    dropout : on encoder inputs/outputs and in the decoder. recurrent_dropout : variational
        dropout on the hidden state (custom cell path). layer_norm : layer-normalised gates.
    residual : residual connections between stacked layers. learn_initial_state : learn h0.
    decoder : ``"direct"`` (MLP to all steps), ``"seq2seq"`` (autoregressive) or
        ``"attention"`` (seq2seq attending over the encoder outputs; stateless only) or
        ``"linear"`` (one linear map from the encoder summary to all steps) or ``"segment"``
        (SegRNN's parallel decoding: segments of ``patch_length`` steps, each from position
        + channel embeddings and one GRU-cell step from the summary).
    attention : ``"luong"`` or ``"bahdanau"``.
    teacher_forcing : scheduled sampling for seq2seq: the probability of feeding the truth
        falls over training, ``"linear"`` (1 -> 0) or ``"inverse_sigmoid"`` (k / (k +
        exp(epoch / k)), k = ``teacher_forcing_k``); ``"always"`` or ``"never"``.
    output : ``"quantile"`` (pinball loss), ``"gaussian"`` or ``"student_t"`` (NLL), or
        ``"point"`` (``loss``; without conformal intervals every quantile column equals
        y_hat).
    loss : training loss of a ``"point"`` output: ``"mse"`` (squared error), ``"mae"``
        (absolute error: the forecast estimates the median) or ``"huber"`` (squared below
        ``huber_delta``, absolute above, in scaled units).
    interval : where the quantile columns come from: ``"model"`` (the head) or
        ``"conformal"`` (split conformal: the head's quantiles, or y_hat for a point head,
        shifted per series, horizon step and channel by quantiles of that series'
        validation residuals; fit then needs ``validation``) or ``"adaptive"`` (adaptive
        conformal inference: y_hat +- half-widths per series, step and channel, seeded from
        the validation |residuals| of y_hat and moved by every observed row that
        :meth:`~recurra.forecasting.rnn.RNNForecaster.update` matches to a remembered
        forecast of the series; needs ``validation`` and one symmetric quantile pair
        ``(q, 1 - q)``, optionally with 0.5, whose coverage ``1 - 2q`` is the target). Both
        go through :mod:`recurra.forecasting.intervals`.
    interval_min_residuals : a series (and channel) with fewer validation windows than this
        at some step uses the pooled, scale-normalised residuals of every series instead of
        its own (``interval`` ``"conformal"`` / ``"adaptive"``; integer >= 1).
    adaptive_gamma : ACI step size in (0, 1] (``interval="adaptive"``).
    quantiles : forecast quantile levels (columns ``q10``...); y_hat is the median (or mean).
    lookback, horizon : window lengths (steps). stride : between training windows.
    max_windows_per_epoch : random subset of training windows per epoch (None = all); with
        ``stateful`` a budget of supervised steps: whole random groups of ``batch_size``
        series until their steps reach it (at least one group).
    stateful, tbptt_length : stateful training with truncated BPTT over chunks.
    stateful_segments : cut each training series into this many consecutive segments (each
        from a fresh state) so that one long series still fills a stateful batch.
    forecast_from_last : the direct decoder forecasts the change from the last
        (forward-filled) target value of each step: a causal level per step that works in
        stateful training too (needs ``decoder="direct"``, no window options).
    stateful_burn_in : steps of the preceding segment that each segment (after a series'
        first) replays to warm up its state; their targets are excluded from the loss.
    target_channels : channels to forecast (None = all); the others are past covariates.
    calendar : calendar covariates on/off. scaler : ``"standard"``, ``"robust"``, ``"none"``.
    target_transform : ``"none"``, ``"log_return"`` or ``"difference"``: the model learns
        on (log) returns of every channel (scaled per series on the training returns) and
        forecasts come back in level units, cumulated from the last observed value
        (:mod:`recurra.forecasting.transforms`); log returns need positive values.
    train : the nested :class:`recurra.nn.train.TrainConfig`.

    Window options (stateless LSTM/GRU only; see :class:`recurra.nn.modules.WindowSpec`):
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

    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    layer_norm: bool = False
    residual: bool = True
    learn_initial_state: bool = False
    decoder: str = "direct"
    attention: str = "luong"
    teacher_forcing: str = "linear"
    teacher_forcing_k: float = 3.0
    output: str = "quantile"
    loss: str = "mse"
    huber_delta: float = 1.0
    interval: str = "model"
    interval_min_residuals: int = 20
    adaptive_gamma: float = 0.005
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    lookback: int = 48
    horizon: int = 24
    stride: int = 1
    max_windows_per_epoch: int | None = None
    stateful: bool = False
    tbptt_length: int = 64
    stateful_segments: int = 1
    stateful_burn_in: int = 0
    forecast_from_last: bool = False
    target_channels: tuple[str, ...] | None = None
    calendar: bool = True
    scaler: str = "standard"
    normalization: str = "none"
    channel_independent: bool = False
    patch_length: int = 1
    linear_skip: bool = False
    linear_skip_ridge: float | None = None
    linear_skip_intercept: bool = True
    target_transform: str = "none"
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):  # rebuilt from JSON (recurra.nn.persistence)
            object.__setattr__(self, "train", TrainConfig(**self.train))
        for name, choices in (("cell", CELLS), ("decoder", DECODERS), ("output", OUTPUTS),
                              ("attention", ATTENTIONS), ("scaler", SCALERS),
                              ("teacher_forcing", TEACHER_FORCING),
                              ("normalization", NORMALIZATIONS), ("loss", LOSSES),
                              ("interval", INTERVALS),
                              ("target_transform", TARGET_TRANSFORMS)):
            if getattr(self, name) not in choices:
                raise RecurraError(f"{name} ({getattr(self, name)!r}) must be one of "
                                   f"{list(choices)}")
        for name in ("hidden_size", "num_layers", "lookback", "horizon", "stride",
                     "tbptt_length", "stateful_segments", "patch_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RecurraError(f"{name} ({value!r}) must be an integer >= 1")
        if (isinstance(self.stateful_burn_in, bool) or not isinstance(self.stateful_burn_in, int)
                or self.stateful_burn_in < 0):
            raise RecurraError(f"stateful_burn_in ({self.stateful_burn_in!r}) must be an "
                               "integer >= 0")
        if self.forecast_from_last and (self.decoder != "direct" or self.windowed):
            raise RecurraError(f"forecast_from_last needs decoder='direct' without window "
                               f"options: got decoder {self.decoder!r}, windowed="
                               f"{self.windowed}")
        for name in ("dropout", "recurrent_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise RecurraError(f"{name} ({getattr(self, name)}) must be in [0, 1)")
        levels = tuple(float(q) for q in self.quantiles)
        if not levels or any(not 0 < q < 1 for q in levels) or list(levels) != sorted(
                set(levels)):
            raise RecurraError(f"quantiles ({self.quantiles}) must be strictly increasing "
                               "levels in (0, 1)")
        if self.decoder == "attention" and self.stateful:
            raise RecurraError("decoder 'attention' needs stateless windows: set stateful="
                               "False or decoder 'direct'/'seq2seq'")
        if self.max_windows_per_epoch is not None and self.max_windows_per_epoch < 1:
            raise RecurraError(f"max_windows_per_epoch ({self.max_windows_per_epoch}) must "
                               "be >= 1 or None")
        if self.loss != "mse" and self.output != "point":
            raise RecurraError(f"loss ({self.loss!r}) applies to output 'point' only (output "
                               f"{self.output!r} has its own loss): set loss='mse' or "
                               "output='point'")
        if not self.huber_delta > 0:
            raise RecurraError(f"huber_delta ({self.huber_delta}) must be > 0")
        if self.interval in ("conformal", "adaptive") and self.stateful:
            raise RecurraError(f"interval {self.interval!r} needs stateless windows "
                               "(stateful=False): it calibrates on validation windows")
        self._check_adaptive(levels)
        if self.teacher_forcing_k <= 0:
            raise RecurraError(f"teacher_forcing_k ({self.teacher_forcing_k}) must be > 0")
        if self.target_channels is not None and not self.target_channels:
            raise RecurraError("target_channels (()) must name at least one channel or be None")
        self._check_window_options()

    def _check_adaptive(self, levels: tuple[float, ...]) -> None:
        if not 0.0 < self.adaptive_gamma <= 1.0:
            raise RecurraError(f"adaptive_gamma ({self.adaptive_gamma}) must be in (0, 1]")
        minimum = self.interval_min_residuals
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            raise RecurraError(f"interval_min_residuals ({minimum!r}) must be an integer >= 1")
        if self.interval != "adaptive":
            return
        pair = [q for q in levels if q != 0.5]
        if len(pair) != 2 or abs(pair[0] + pair[1] - 1.0) > 1e-9:
            raise RecurraError(f"quantiles ({self.quantiles}) with interval 'adaptive' must "
                               "be one symmetric pair (q, 1 - q), optionally with 0.5, e.g. "
                               "(0.1, 0.5, 0.9): the band is y_hat +- one adaptive half-width")

    @property
    def windowed(self) -> bool:
        """True when any window option (normalisation, channel independence, patches,
        linear skip) is on."""
        return (self.normalization != "none" or self.channel_independent
                or self.patch_length > 1 or self.linear_skip)

    def _check_window_options(self) -> None:
        if self.lookback % self.patch_length:
            raise RecurraError(f"lookback ({self.lookback}) must be a multiple of "
                               f"patch_length ({self.patch_length})")
        if self.windowed and (self.stateful or self.cell == "grud"):
            raise RecurraError(f"normalization/channel_independent/patch_length/linear_skip "
                               f"need stateless windows of an LSTM/GRU: got stateful="
                               f"{self.stateful}, cell {self.cell!r}")
        if self.channel_independent and self.target_channels is not None:
            raise RecurraError(f"channel_independent forecasts every channel: "
                               f"target_channels ({self.target_channels}) must be None")
        if self.linear_skip_ridge is not None and (
                not self.linear_skip or not self.linear_skip_ridge >= 0):
            raise RecurraError(f"linear_skip_ridge ({self.linear_skip_ridge}) must be >= 0 "
                               f"and needs linear_skip=True (got {self.linear_skip})")
