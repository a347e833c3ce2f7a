"""P4: in-hospital mortality on PhysioNet 2012 (set a) from the first 48 h, GRU-D vs baselines.

Protocol (BENCHMARKS.md, P4): time-varying variables = every parameter except RecordID, Age,
Gender, Height, ICUType; value -1 = missing. 48 hourly bins (last value per bin, mask =
observed in the bin, delta in hours since the variable was last observed, as in Che et al.
2018). Preprocessing (default ``--preprocess robust``; training statistics only): clip each
variable to its training 0.5/99.5 percentiles (unit errors), log1p the skewed non-negative
variables (:func:`robust_transform`), z-score (observed values only, clipped to +-6 std).
Static inputs (age, gender, height, weight at admission + missing flags, ICU type when
present) are concatenated to the last hidden state of every model. Stratified 80/20 split per
seed (0, 1, 2); 10 % of the training part (stratified) for early stopping (default: on the
validation AUC-ROC, patience 10; the best epoch's weights are kept). No test data is used for
any choice: the regularisation defaults below are the GRU-D setting with the highest mean
best-epoch validation AUC-ROC over the three splits among the settings tried (README).

Regularisation (defaults, the same for all models where the model has it): dropout 0.5 on
the classifier input, variational input dropout 0.2, AdamW weight decay 0.05, lr 1e-3,
gradient-norm clipping 1; GRU-D also has recurrent dropout 0.5 (``nn.GRU``/``nn.LSTM`` have
no recurrent dropout).

Models: ``grud`` (:class:`recurra.nn.grud.GRUDClassifier`; by default the static inputs
also set its initial hidden state, ``--static-to-state``, chosen on validation AUC-ROC),
``gru_mean`` (GRU on values filled with the training mean, i.e. 0 after z-scoring, + mask
channels), ``lstm_ffill`` (LSTM on forward-filled values, training mean before the first
observation).

Ensembles (default ``--members 3``, every model type alike): per split, models with seeds
``seed + 1000 k`` (initialisation and batch order differ, data and split do not); the
reported ``auc_*`` average their predicted probabilities, ``single_auc_*`` are the mean over
every member model.

Usage::

    python benchmarks/grud_physionet.py --records ../shared/data/physionet2012/set-a.csv.gz \
        --outcomes ../shared/data/physionet2012/Outcomes-a.txt [--quick]

T2 (GRU-D seconds per epoch, side by side with PyPOTS) is ``benchmarks/_t2_grud.py``;
``grud_epoch_seconds`` is kept for callers of the old name.

Size: ~535 lines, because it is the P4 protocol end to end: binning, the robust
preprocessing fitted on training records only, the models, the seeded splits and the
evaluation, so every choice behind its AUC figures is read in one file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import _common  # noqa: E402
from _common import SHARED_DATA, device_name, versions, write_result  # noqa: E402

from recurra.data.arrays import compute_delta, forward_fill  # noqa: E402
from recurra.nn.grud import GRUDClassifier  # noqa: E402
from recurra.nn.train import TrainConfig, fit_module  # noqa: E402

N_HOURS = 48
STATIC_PARAMETERS = ("RecordID", "Age", "Gender", "Height", "ICUType")
MODELS = ("grud", "gru_mean", "lstm_ffill")
CLIP = 6.0


@dataclass
class Cohort:
    """The binned cohort: N records, T=48 hourly bins, F variables, S static inputs."""

    record_ids: np.ndarray   # (N,)
    values: np.ndarray       # (N, T, F) float32, NaN where not observed
    observed: np.ndarray     # (N, T, F) bool
    delta: np.ndarray        # (N, T, F) float32, hours
    static: np.ndarray       # (N, S) float32, raw (NaN missing)
    labels: np.ndarray       # (N,) float32 in {0, 1}
    variables: tuple[str, ...]


def read_records(path: str | Path) -> pl.DataFrame:
    """The long CSV (RecordID, Time HH:MM, Parameter, Value) with minutes and -1 as null."""
    frame = pl.read_csv(path, schema_overrides={"RecordID": pl.Int64, "Time": pl.Utf8,
                                                "Parameter": pl.Utf8, "Value": pl.Float64})
    parts = pl.col("Time").str.split_exact(":", 1)
    return frame.with_columns(
        (parts.struct.field("field_0").cast(pl.Int64) * 60
         + parts.struct.field("field_1").cast(pl.Int64)).alias("minutes"),
        pl.when(pl.col("Value") == -1).then(None).otherwise(pl.col("Value")).alias("Value"),
    ).filter(pl.col("Parameter").is_not_null())


def load_cohort(records: str | Path, outcomes: str | Path) -> Cohort:
    """Bin the records into 48 hourly steps and join the in-hospital death label."""
    frame = read_records(records)
    labels = pl.read_csv(outcomes).select(pl.col("RecordID").cast(pl.Int64),
                                          pl.col("In-hospital_death").cast(pl.Float32))
    ids = (frame.select("RecordID").unique().join(labels, on="RecordID").sort("RecordID"))
    record_ids = ids["RecordID"].to_numpy()
    row_of = {int(r): i for i, r in enumerate(record_ids)}
    dynamic = frame.filter(~pl.col("Parameter").is_in(STATIC_PARAMETERS)
                           & pl.col("Value").is_not_null()
                           & pl.col("RecordID").is_in(record_ids.tolist()))
    variables = tuple(sorted(dynamic["Parameter"].unique().to_list()))
    column_of = {name: j for j, name in enumerate(variables)}
    binned = (dynamic.with_columns((pl.col("minutes") // 60).clip(0, N_HOURS - 1).alias("hour"))
              .sort(["RecordID", "minutes"], maintain_order=True)
              .group_by(["RecordID", "hour", "Parameter"], maintain_order=True)
              .agg(pl.col("Value").last()))
    n, f = len(record_ids), len(variables)
    values = np.full((n, N_HOURS, f), np.nan, dtype=np.float32)
    rows = np.array([row_of[int(r)] for r in binned["RecordID"].to_list()])
    cols = np.array([column_of[p] for p in binned["Parameter"].to_list()])
    values[rows, binned["hour"].to_numpy(), cols] = binned["Value"].to_numpy()
    observed = ~np.isnan(values)
    hours = np.arange(N_HOURS, dtype=np.float64)
    delta = np.stack([compute_delta(hours, observed[i]) for i in range(n)]).astype(np.float32)
    return Cohort(record_ids, values, observed, delta, _static_inputs(frame, record_ids),
                  ids["In-hospital_death"].to_numpy().astype(np.float32), variables)


def _static_inputs(frame: pl.DataFrame, record_ids: np.ndarray) -> np.ndarray:
    """(N, S): age, gender==1, gender missing, height, height missing, weight at admission
    (the 00:00 descriptor row), weight missing, ICU type one-hot (when the file has it)."""
    admission = (pl.col("Parameter") == "Weight") & (pl.col("minutes") == 0)
    static = (frame.filter(pl.col("Parameter").is_in(STATIC_PARAMETERS[1:]) | admission)
              .group_by(["RecordID", "Parameter"]).agg(pl.col("Value").drop_nulls().first())
              .pivot(on="Parameter", index="RecordID", values="Value"))
    static = pl.DataFrame({"RecordID": record_ids}).join(static, on="RecordID", how="left")

    def column(name: str) -> np.ndarray:
        if name not in static.columns:
            return np.full(len(record_ids), np.nan)
        return static[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

    age, gender, height, icu, weight = (column(n) for n in ("Age", "Gender", "Height",
                                                            "ICUType", "Weight"))
    features = [age, (gender == 1).astype(float), np.isnan(gender).astype(float),
                height, np.isnan(height).astype(float), weight, np.isnan(weight).astype(float)]
    if not np.isnan(icu).all():
        features += [(icu == k).astype(float) for k in (1, 2, 3, 4)]
    return np.stack(features, axis=1).astype(np.float32)


def robust_transform(values: np.ndarray, train_index: np.ndarray,
                     percentiles: tuple[float, float] = (0.5, 99.5),
                     skew_threshold: float = 2.0) -> tuple[np.ndarray, list[str]]:
    """Clip each variable to its training percentiles, then log1p the skewed ones.

    values : (N, T, F) with NaN where missing.  PhysioNet 2012 has unit errors (pH 7.4
    recorded as 740, temperatures below 0): clipping to the training 0.5/99.5 percentiles
    removes them; a variable whose clipped training values are all >= 0 and have a sample
    skewness above ``skew_threshold`` (lab values such as creatinine, lactate, troponin,
    urine) is log1p-transformed.  Only training records are used.  Returns the transformed
    array and the indices (as strings) of the log-transformed variables.
    """
    flat = values[train_index].reshape(-1, values.shape[-1])
    low, high = np.nanpercentile(flat, percentiles, axis=0)
    clipped = np.clip(values, low, high)
    flat = np.clip(flat, low, high)
    mean, std = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
    skew = np.nanmean(((flat - mean) / np.where(std > 1e-6, std, 1.0)) ** 3, axis=0)
    logged = (np.nanmin(flat, axis=0) >= 0) & (skew > skew_threshold)
    clipped[..., logged] = np.log1p(clipped[..., logged])
    return clipped, [str(j) for j in np.flatnonzero(logged)]


def model_inputs(cohort: Cohort, train_index: np.ndarray,
                 robust: bool = False) -> dict[str, torch.Tensor]:
    """Tensors for every model, z-scored with the training records' statistics
    (after :func:`robust_transform` when ``robust``)."""
    values = cohort.values
    if robust:
        values, _ = robust_transform(values, train_index)
    train_values = values[train_index]
    mean = np.nanmean(train_values.reshape(-1, train_values.shape[-1]), axis=0)
    std = np.nanstd(train_values.reshape(-1, train_values.shape[-1]), axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.nan_to_num(std) > 1e-6, std, 1.0)
    scaled = np.clip((values - mean) / std, -CLIP, CLIP)
    zero_filled = np.nan_to_num(scaled, nan=0.0).astype(np.float32)
    ffill = np.stack([forward_fill(scaled[i], cohort.observed[i]) for i in range(len(scaled))])
    static = cohort.static.copy()
    s_mean = np.nanmean(static[train_index], axis=0)
    s_std = np.nanstd(static[train_index], axis=0)
    static = (static - s_mean) / np.where(s_std > 1e-6, s_std, 1.0)
    return {"x": torch.from_numpy(zero_filled),
            "observed": torch.from_numpy(cohort.observed),
            "delta": torch.from_numpy(cohort.delta),
            "x_ffill": torch.from_numpy(ffill.astype(np.float32)),
            "static": torch.from_numpy(np.nan_to_num(static).astype(np.float32)),
            "y": torch.from_numpy(cohort.labels)}


class RNNClassifier(nn.Module):
    """GRU/LSTM baseline on (filled values [+ mask]) + static inputs, head on the last state."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, static_size: int,
                 dropout: float, input_dropout: float = 0.0) -> None:
        super().__init__()
        self.input_dropout = input_dropout
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(input_size, hidden_size, batch_first=True)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size + static_size, 1)

    def forward(self, inputs: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        if self.training and self.input_dropout > 0:  # variational: one mask per sequence
            keep = 1.0 - self.input_dropout
            inputs = inputs * torch.bernoulli(torch.full_like(inputs[:, :1], keep)) / keep
        output, _ = self.rnn(inputs)
        return self.head(self.head_dropout(torch.cat([output[:, -1], static], dim=1)))


def build_model(name: str, n_variables: int, static_size: int, hidden: int,
                dropout: float = 0.3, input_dropout: float = 0.0,
                recurrent_dropout: float = 0.0, static_to_state: bool = False) -> nn.Module:
    """One of :data:`MODELS`; ``dropout`` on the classifier input (last state + static),
    variational ``input_dropout`` for every model, ``recurrent_dropout`` for GRU-D only
    (``nn.GRU``/``nn.LSTM`` have none), ``static_to_state`` for GRU-D only (static inputs
    also set the initial hidden state)."""
    if name == "grud":
        return GRUDClassifier(n_variables, hidden, static_size=static_size, dropout=dropout,
                              input_dropout=input_dropout,
                              recurrent_dropout=recurrent_dropout,
                              static_to_state=static_to_state)
    if name == "gru_mean":
        return RNNClassifier("gru", 2 * n_variables, hidden, static_size, dropout,
                             input_dropout)
    if name == "lstm_ffill":
        return RNNClassifier("lstm", n_variables, hidden, static_size, dropout, input_dropout)
    raise ValueError(f"model ({name!r}) must be one of {list(MODELS)}")


def logits_of(name: str, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if name == "grud":
        return model(batch["x"], batch["observed"], batch["delta"], batch["static"])[:, 0]
    if name == "gru_mean":
        inputs = torch.cat([batch["x"], batch["observed"].float()], dim=-1)
        return model(inputs, batch["static"])[:, 0]
    return model(batch["x_ffill"], batch["static"])[:, 0]


def batches(tensors: dict[str, torch.Tensor], index: np.ndarray, batch_size: int,
            rng: np.random.Generator | None = None) -> list[dict[str, torch.Tensor]]:
    order = rng.permutation(index) if rng is not None else index
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [{k: v[torch.from_numpy(c)] for k, v in tensors.items()} for c in chunks]


def train_and_test(name: str, tensors: dict[str, torch.Tensor], split: dict[str, np.ndarray],
                   *, hidden: int, epochs: int, seed: int, device: str,
                   batch_size: int = 64, patience: int = 5, monitor: str = "loss",
                   dropout: float = 0.3, weight_decay: float = 1e-4,
                   learning_rate: float = 1e-3, input_dropout: float = 0.0,
                   recurrent_dropout: float = 0.0, static_to_state: bool = False) -> dict:
    """Train one model on one split; return test AUCs, seconds per epoch, epochs run.

    Model selection uses only ``split["val"]`` (early stopping on its loss or AUC-ROC)."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    model = build_model(name, tensors["x"].shape[-1], tensors["static"].shape[-1], hidden,
                        dropout, input_dropout, recurrent_dropout, static_to_state)
    loss_fn = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)

    def step(module, batch):
        logits = logits_of(name, module, batch)
        if monitor == "auc" and not module.training:  # the whole validation set is one batch
            labels = batch["y"].cpu().numpy()
            return torch.tensor(-roc_auc_score(labels, logits.detach().float().cpu().numpy()))
        return loss_fn(logits, batch["y"])

    config = TrainConfig(max_epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, weight_decay=weight_decay,
                         early_stopping_patience=patience, seed=seed,
                         device=device, clip_norm=1.0)
    started = time.perf_counter()
    result = fit_module(model, step, lambda: batches(tensors, split["train"], batch_size, rng),
                        lambda: batches(tensors, split["val"], len(split["val"])), config,
                        callback=_progress)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    test_scores = predict_scores(name, model, tensors, split["test"], device)
    predict_s = time.perf_counter() - started
    val_scores = predict_scores(name, model, tensors, split["val"], device)
    return {**_aucs(tensors["y"], split["test"], test_scores),
            "val_auc_roc": _aucs(tensors["y"], split["val"], val_scores)["auc_roc"],
            "seconds_per_epoch": float(np.mean([h["seconds"] for h in result.history])),
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_s": train_s, "predict_s": predict_s,
            "test_scores": test_scores, "val_scores": val_scores}


def predict_scores(name: str, model: nn.Module, tensors: dict[str, torch.Tensor],
                   index: np.ndarray, device: str) -> np.ndarray:
    """Predicted probabilities (len(index),) of a trained model, in evaluation mode."""
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.sigmoid(logits_of(name, model, {k: v.to(device) for k, v
                                                               in b.items()})).cpu()
                          for b in batches(tensors, index, 512)]).numpy()


def _aucs(labels: torch.Tensor, index: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = labels[torch.from_numpy(index)].numpy()
    return {"auc_roc": float(roc_auc_score(truth, scores)),
            "auc_pr": float(average_precision_score(truth, scores))}


def train_ensemble(name: str, tensors: dict[str, torch.Tensor], split: dict[str, np.ndarray],
                   *, members: int, seed: int, **options) -> dict:
    """Train ``members`` models on one split (model seeds ``seed + 1000 k``: initialisation
    and batch order differ, the data does not) and average their predicted probabilities.

    Returns the ensemble's test/validation AUCs, the members' figures (``single``) and the
    summed timings.  Member 0 is the single model of a one-member run.
    """
    runs = []
    for k in range(members):
        runs.append(train_and_test(name, tensors, split, seed=seed + 1000 * k, **options))
        print(name, seed, k, {key: round(v, 4) if isinstance(v, float) else v
                              for key, v in runs[-1].items() if not key.endswith("_scores")},
              file=sys.stderr, flush=True)
    test = np.mean([r["test_scores"] for r in runs], axis=0)
    val = np.mean([r["val_scores"] for r in runs], axis=0)
    single = [{k: v for k, v in r.items() if not k.endswith("_scores")} for r in runs]
    return {**_aucs(tensors["y"], split["test"], test),
            "val_auc_roc": _aucs(tensors["y"], split["val"], val)["auc_roc"],
            "single": single, "scores": {"val": np.stack([r["val_scores"] for r in runs]),
                                         "test": np.stack([r["test_scores"] for r in runs])},
            "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])),
            "epochs_run": [r["epochs_run"] for r in runs],
            "train_s": float(sum(r["train_s"] for r in runs)),
            "predict_s": float(sum(r["predict_s"] for r in runs))}


def _progress(event: str, payload: dict) -> None:
    if event == "epoch_end":
        print(f"  epoch {payload['epoch']}: train {payload['train_loss']:.4f} val "
              f"{payload['val_loss']:.4f} ({payload['seconds']:.1f} s)", file=sys.stderr,
              flush=True)


def make_split(labels: np.ndarray, seed: int, n_test: np.ndarray | None = None) -> dict:
    """Stratified 80/20 (unless ``n_test`` gives the test rows), then 10 % of train for val."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if n_test is None:
        train, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=seed)
    else:
        train, test = np.setdiff1d(index, n_test), n_test
    train, val = train_test_split(train, test_size=0.1, stratify=labels[train],
                                  random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def grud_epoch_seconds(records: str | Path, outcomes: str | Path, hidden: int = 64,
                       device: str = "cpu", batch_size: int = 64) -> float:
    """T2: seconds for one GRU-D training epoch over every record (see ``_t2_grud.py``)."""
    from _t2_grud import cohort_epoch_seconds

    return cohort_epoch_seconds(load_cohort(records, outcomes), hidden, device, batch_size)[0]


def _summary(runs: list[dict]) -> dict:
    """Mean +- std over the splits of the ensemble figures, and of every member (single)."""
    result = {}
    singles = [m for r in runs for m in r["single"]]
    for key in ("auc_roc", "auc_pr", "val_auc_roc"):
        values = np.array([r[key] for r in runs])
        result[f"{key}_mean"] = float(values.mean())
        result[f"{key}_std"] = float(values.std())
        values = np.array([m[key] for m in singles])
        result[f"single_{key}_mean"] = float(values.mean())
        result[f"single_{key}_std"] = float(values.std())
    result["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in runs]))
    result["epochs_run"] = [r["epochs_run"] for r in runs]
    result["per_seed"] = [{k: round(r[k], 4) for k in ("auc_roc", "auc_pr", "val_auc_roc")}
                          for r in runs]
    result["single_per_seed"] = [[{k: round(m[k], 4) for k in ("auc_roc", "val_auc_roc")}
                                  for m in r["single"]] for r in runs]
    return result


def main(argv: list[str] | None = None) -> dict:
    folder = SHARED_DATA / "physionet2012"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default=str(folder / "set-a.csv.gz"))
    parser.add_argument("--outcomes", default=str(folder / "Outcomes-a.txt"))
    parser.add_argument("--test-records", default=None)
    parser.add_argument("--test-outcomes", default=None)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split/model seeds")
    parser.add_argument("--epochs", type=int, default=60, help="max epochs (early stopping)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    parser.add_argument("--monitor", choices=("loss", "auc"), default="auc",
                        help="early stopping on validation loss or on validation AUC-ROC")
    parser.add_argument("--dropout", type=float, default=0.5,
                        help="dropout on the classifier input (last state + static)")
    parser.add_argument("--input-dropout", type=float, default=0.2,
                        help="variational dropout on the RNN inputs (every model)")
    parser.add_argument("--recurrent-dropout", type=float, default=0.5,
                        help="variational recurrent dropout (GRU-D only)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--preprocess", choices=("zscore", "robust"), default="robust",
                        help="robust: clip to training 0.5/99.5 percentiles and log1p skewed "
                        "variables before z-scoring")
    parser.add_argument("--members", type=int, default=3,
                        help="models per split (seeds differ), probabilities averaged")
    parser.add_argument("--static-to-state", action=argparse.BooleanOptionalAction,
                        default=True, help="GRU-D: static inputs also set the initial hidden "
                        "state (chosen on validation AUC-ROC: 0.865 vs 0.859 without)")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--out", default=None, help="write the JSON here instead of "
                        "benchmarks/results (exploratory runs)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: measured 20x faster than 2 on the shared, "
                        "oversubscribed 2-core CPU; small recurrent matmuls gain nothing)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 400 records, 2 epochs")
    _common.add_write_flag(parser)
    args = parser.parse_args(argv)
    _common.keep_out_of_results(args.write)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    cohort = load_cohort(args.records, args.outcomes)
    test_rows = None
    if args.test_records:
        if not args.test_outcomes:
            parser.error("--test-records needs --test-outcomes")
        cohort, test_rows = _append_test(cohort, load_cohort(args.test_records,
                                                             args.test_outcomes))
    if args.quick:
        keep = np.random.default_rng(0).permutation(len(cohort.labels))[:400]
        cohort = _subset(cohort, np.sort(keep))
        seeds, args.epochs, args.hidden = seeds[:1], 2, 16
    runs: dict[str, list[dict]] = {m: [] for m in models}
    for seed in seeds:
        split = make_split(cohort.labels, seed, test_rows)
        tensors = model_inputs(cohort, split["train"], robust=args.preprocess == "robust")
        for name in models:
            runs[name].append(train_ensemble(
                name, tensors, split, members=args.members, seed=seed, hidden=args.hidden,
                epochs=args.epochs, device=args.device, batch_size=args.batch_size,
                patience=args.patience, monitor=args.monitor, dropout=args.dropout,
                learning_rate=args.lr, weight_decay=args.weight_decay,
                input_dropout=args.input_dropout,
                recurrent_dropout=args.recurrent_dropout,
                static_to_state=args.static_to_state))
            print(name, seed, "ensemble", {k: round(v, 4) for k, v in runs[name][-1].items()
                                           if k in ("auc_roc", "auc_pr", "val_auc_roc")},
                  file=sys.stderr, flush=True)
    if args.out:  # exploratory runs keep every member's scores for a look at ensemble sizes
        np.savez(Path(args.out).with_suffix(".npz"), **{
            f"{name}_{seed}_{part}": r["scores"][part] for name, rs in runs.items()
            for seed, r in zip(seeds, rs, strict=True) for part in ("val", "test")})
    result = {name: _summary(r) for name, r in runs.items()}
    result.update({
        "train_s": float(sum(r["train_s"] for rs in runs.values() for r in rs)),
        "predict_s": float(sum(r["predict_s"] for rs in runs.values() for r in rs)),
        "epochs": args.epochs, "early_stopping_patience": args.patience,
        "early_stopping_monitor": f"validation {args.monitor}",
        "dropout": args.dropout, "input_dropout": args.input_dropout,
        "recurrent_dropout": args.recurrent_dropout, "weight_decay": args.weight_decay,
        "static_to_state": args.static_to_state,
        "learning_rate": args.lr, "members": args.members,
        "figures": "auc_* = ensemble of `members` models per split (mean probability); "
                   "single_auc_* = mean over every member model",
        "preprocess": args.preprocess,
        "hidden": args.hidden, "batch_size": args.batch_size, "seeds": seeds,
        "n_records": int(len(cohort.labels)),
        "n_variables": len(cohort.variables), "static_size": int(cohort.static.shape[1]),
        "positive_rate": float(cohort.labels.mean()), "quick": args.quick,
        "reference": {"grud_auc_roc": "0.8424 +- 0.012 (Che et al. 2018)",
                      "gru_mean_auc_roc": "about 0.81"},
    })
    if args.out:
        result.update(benchmark="grud_physionet", device=device_name(args.device),
                      versions=versions(("sklearn",)))
        line = json.dumps(result)
        Path(args.out).write_text(line + "\n")
        print(line, flush=True)
        return result
    stem = "grud_physionet_quick" if args.quick else "grud_physionet"
    write_result(stem + (f"_{args.tag}" if args.tag else ""), result,
                 device=args.device, extra_versions=("sklearn",))
    return result


def _subset(cohort: Cohort, index: np.ndarray) -> Cohort:
    return Cohort(cohort.record_ids[index], cohort.values[index], cohort.observed[index],
                  cohort.delta[index], cohort.static[index], cohort.labels[index],
                  cohort.variables)


def _append_test(train: Cohort, test: Cohort) -> tuple[Cohort, np.ndarray]:
    """One cohort with the test records last (variables aligned on the training ones)."""
    columns = [test.variables.index(v) if v in test.variables else None for v in train.variables]

    def align(array: np.ndarray, fill) -> np.ndarray:
        out = np.full(array.shape[:2] + (len(columns),), fill, dtype=array.dtype)
        for j, source in enumerate(columns):
            if source is not None:
                out[..., j] = array[..., source]
        return out

    values, observed = align(test.values, np.nan), align(test.observed, False)
    delta = np.stack([compute_delta(np.arange(N_HOURS, dtype=np.float64), o)
                      for o in observed]).astype(np.float32)
    merged = Cohort(np.r_[train.record_ids, test.record_ids],
                    np.concatenate([train.values, values]),
                    np.concatenate([train.observed, observed]),
                    np.concatenate([train.delta, delta]),
                    np.concatenate([train.static, test.static[:, :train.static.shape[1]]]),
                    np.r_[train.labels, test.labels], train.variables)
    return merged, np.arange(len(train.labels), len(merged.labels))


if __name__ == "__main__":
    main()
