"""F1 / F2 financial benchmarks: rolling one-day VaR backtests and P2 on log returns.

    python benchmarks/finance.py --write                     # F1 on arch.data sp500 + nasdaq
    python benchmarks/finance.py --csv prices.csv --write    # F1 on any OHLC file(s)
    python benchmarks/finance.py --part f2 --fx ../shared/data/finance/exchange_rate.txt.gz

F1: daily log returns of the (adjusted) close; over the last ``--test-years`` years, every
day gets a one-day-ahead 99 % and 95 % VaR (the 1 % / 5 % return quantiles) and a variance
forecast from models that see only the past: GARCH(1,1) (normal) and GJR-GARCH (Student-t)
refitted every ``--garch-refit`` trading days, our RNN with a Student-t head refitted every
``--rnn-refit`` days, and 250-day historical simulation; between refits each model streams
(``update``) the new day. Reported per series and model: violation rates, Kupiec and
Christoffersen p-values, pinball losses, and QLIKE against squared returns. Holidays are
dropped (returns span them), so a "day" is a trading day.

F2: P2 exchange rates (split 70/10/20, look-back 96, horizon 96, z-scored MSE / MAE) with
``target_transform="log_return"``, against repeat-last on the same windows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import torch  # noqa: E402
from _common import SHARED_DATA, write_result  # noqa: E402

from recurra.data import loaders  # noqa: E402
from recurra.data.schema import CHANNEL, OBSERVED, SERIES_ID, TIMESTAMP, VALUE, Y_HAT  # noqa: E402
from recurra.forecasting import transforms  # noqa: E402
from recurra.forecasting.baselines import GarchConfig, GarchForecaster  # noqa: E402
from recurra.forecasting.config import EncoderConfig  # noqa: E402
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster  # noqa: E402
from recurra.forecasting.var_backtest import christoffersen, kupiec, pinball, qlike  # noqa: E402
from recurra.nn.train import TrainConfig  # noqa: E402

LEVELS = (0.01, 0.05)
RNN_QUANTILES = (0.01, 0.05, 0.5)
HS_WINDOW = 250


# -- data -------------------------------------------------------------------------------
def arch_prices(names: list[str]) -> pl.DataFrame:
    """Adjusted closes of ``arch.data`` sets as a contract frame (trading days only)."""
    import importlib

    parts = []
    for name in names:
        data = importlib.import_module(f"arch.data.{name}").load()
        column = "Adj Close" if "Adj Close" in data.columns else "Close"
        parts.append(pl.DataFrame({
            SERIES_ID: name, CHANNEL: "close",
            TIMESTAMP: pl.Series(data.index.to_numpy()).cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
            VALUE: data[column].to_numpy().astype(float)}))
    return pl.concat(parts).with_columns(pl.lit(True).alias(OBSERVED))


def csv_prices(paths: list[Path]) -> pl.DataFrame:
    """Close (adj_close where present) of OHLC files through ``load_prices``."""
    parts = []
    for path in paths:
        frame = loaders.load_prices(path).frame
        channel = "adj_close" if "adj_close" in set(frame[CHANNEL]) else "close"
        parts.append(frame.filter(pl.col(CHANNEL) == channel).with_columns(
            pl.lit("close").alias(CHANNEL)))
    return pl.concat(parts)


def log_returns(prices: pl.DataFrame) -> pl.DataFrame:
    """Observed daily log returns (gaps dropped: a return spans a holiday)."""
    returns = transforms.to_returns(prices.filter(pl.col(OBSERVED)), "log_return")
    return returns.filter(pl.col(OBSERVED)).sort(SERIES_ID, CHANNEL, TIMESTAMP)


# -- models -----------------------------------------------------------------------------
def t_variance(q01: np.ndarray, q05: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Variance of a Student-t from its 1 %, 5 % and 50 % quantiles (the head's location,
    scale and degrees of freedom are recovered exactly: the tail ratio fixes df)."""
    from scipy import optimize, stats

    out = np.empty(q01.shape)
    for i, (a, b, m) in enumerate(zip(q01, q05, median, strict=True)):
        ratio = (m - a) / max(m - b, 1e-300)

        def gap(df: float, ratio: float = ratio) -> float:
            return stats.t.ppf(0.99, df) / stats.t.ppf(0.95, df) - ratio

        low, high = 2.0001, 1e6
        df = high if gap(high) > 0 else (low if gap(low) < 0 else optimize.brentq(
            gap, low, high))
        scale = (m - a) / stats.t.ppf(0.99, df)
        out[i] = scale ** 2 * df / (df - 2)
    return out


def rolling(returns: pl.DataFrame, test_start: int, make, refit_every: int, quantiles,
            variance) -> dict[str, np.ndarray]:
    """One-day forecasts of every test day of one series: fit on the past every
    ``refit_every`` days, ``update`` with each day in between."""
    n = returns.height
    q = {level: np.empty(n - test_start) for level in LEVELS}
    var = np.empty(n - test_start)
    model = None
    for i, t in enumerate(range(test_start, n)):
        if i % refit_every == 0:
            model = make().fit(returns.head(t))
            forecast = model.predict()
        else:  # update returns the forecast from the end of the new row
            forecast = model.update(returns.slice(t - 1, 1))
        row = forecast.filter(pl.col("step") == 1)
        for level in LEVELS:
            q[level][i] = row[quantiles[level]][0]
        var[i] = variance(model, row)
    return {"q": q, "variance": var}


def historical(values: np.ndarray, test_start: int) -> dict[str, np.ndarray]:
    windows = np.lib.stride_tricks.sliding_window_view(values, HS_WINDOW)[
        test_start - HS_WINDOW:len(values) - HS_WINDOW]
    return {"q": {level: np.quantile(windows, level, axis=1) for level in LEVELS},
            "variance": windows.var(axis=1)}


def scores(y: np.ndarray, result: dict) -> dict:
    out = {"qlike": qlike(y ** 2, result["variance"])}
    for level in LEVELS:
        hits = y < result["q"][level]
        tag = f"var{round(100 * (1 - level))}"
        out[tag] = {"violation_rate": float(hits.mean()), "n_violations": int(hits.sum()),
                    "kupiec_p": kupiec(hits, level).pvalue,
                    "christoffersen_p": christoffersen(hits).pvalue,
                    "pinball": pinball(y, result["q"][level], level)}
        out[tag]["passes_both"] = bool(out[tag]["kupiec_p"] > 0.05
                                       and out[tag]["christoffersen_p"] > 0.05)
    return out


def rnn_factory(args: argparse.Namespace):
    train = TrainConfig(max_epochs=args.rnn_epochs, batch_size=128, device="cpu", seed=0,
                        early_stopping_patience=2)
    config = ForecasterConfig(lookback=60, horizon=1, quantiles=RNN_QUANTILES, calendar=False,
                              max_windows_per_epoch=args.rnn_windows, train=train,
                              encoder=EncoderConfig(cell="lstm", hidden_size=args.rnn_hidden),
                              output="student_t")

    class _Fit:
        def __init__(self) -> None:
            self.model = RNNForecaster(config)

        def fit(self, frame: pl.DataFrame) -> _Fit:
            cut = int(frame.height * 0.9)
            self.model.fit(frame.head(cut), validation=frame.slice(cut - 60))
            self.model.update(frame.slice(cut))
            return self

        def update(self, rows: pl.DataFrame) -> pl.DataFrame:
            return self.model.update(rows)

        def predict(self) -> pl.DataFrame:
            return self.model.predict()

    return _Fit


def f1(args: argparse.Namespace) -> dict:
    prices = csv_prices(args.csv) if args.csv else arch_prices(args.arch)
    returns = log_returns(prices)
    test_days = 252 * args.test_years
    rnn = rnn_factory(args)
    garch_q = {level: f"q{round(100 * level)}" for level in LEVELS}
    rnn_q = {level: f"q{round(100 * level)}" for level in LEVELS}

    def garch_variance(model, row):
        return float(model.predict_variance()["variance"][0])

    def rnn_variance(model, row):
        return float(t_variance(row["q1"].to_numpy(), row["q5"].to_numpy(),
                                row["q50"].to_numpy())[0])

    models = {
        "garch_11_normal": (lambda: GarchForecaster(GarchConfig(quantiles=LEVELS)),
                            args.garch_refit, garch_q, garch_variance),
        "gjr_garch_t": (lambda: GarchForecaster(GarchConfig(kind="gjr", distribution="t",
                                                            quantiles=LEVELS)),
                        args.garch_refit, garch_q, garch_variance),
        "rnn_lstm_student_t": (rnn, args.rnn_refit, rnn_q, rnn_variance),
    }
    per_series, timing = {}, {}
    for (series,), part in returns.partition_by(SERIES_ID, as_dict=True).items():
        part = part.sort(TIMESTAMP)
        start = part.height - test_days
        y = part[VALUE].to_numpy()[start:]
        results = {"historical_simulation_250": historical(part[VALUE].to_numpy(), start)}
        for name, (make, every, columns, variance) in models.items():
            begun = time.perf_counter()
            results[name] = rolling(part, start, make, every, columns, variance)
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - begun
        per_series[str(series)] = {
            "test_start": str(part[TIMESTAMP][start].date()),
            "test_end": str(part[TIMESTAMP][-1].date()), "n_test_days": int(y.size),
            "models": {name: scores(y, result) for name, result in results.items()}}
    goal = {}
    for series, block in per_series.items():
        ours, gjr = block["models"]["rnn_lstm_student_t"], block["models"]["gjr_garch_t"]
        goal[series] = {
            "passes_both_tests_99_and_95": ours["var99"]["passes_both"]
            and ours["var95"]["passes_both"],
            "qlike_at_least_as_good_as_gjr": ours["qlike"] <= gjr["qlike"],
            "pinball_at_least_as_good_as_gjr": all(
                ours[t]["pinball"] <= gjr[t]["pinball"] for t in ("var99", "var95"))}
    return {"f1": {"series": per_series, "goal_rnn": goal,
                   "data": [str(p) for p in args.csv] if args.csv else
                   [f"arch.data.{n}" for n in args.arch],
                   "refit_days": {"garch": args.garch_refit, "rnn": args.rnn_refit},
                   "rnn": {"hidden": args.rnn_hidden, "epochs": args.rnn_epochs,
                           "windows_per_epoch": args.rnn_windows, "lookback": 60},
                   "seconds": timing},
            "train_s": sum(timing.values())}


def f2(args: argparse.Namespace) -> dict:
    frame = loaders.load_matrix(args.fx, "fx").frame
    wide = frame.pivot(on=CHANNEL, index=TIMESTAMP, values=VALUE).sort(TIMESTAMP)
    channels = [c for c in wide.columns if c != TIMESTAMP]
    values = wide.select(channels).to_numpy()
    n = values.shape[0]
    n_train, n_test = int(0.7 * n), int(0.2 * n)
    test_from = n - n_test
    mean, std = values[:n_train].mean(axis=0), values[:n_train].std(axis=0)
    times = wide[TIMESTAMP]
    train = frame.filter(pl.col(TIMESTAMP) < times[n_train])
    validation = frame.filter((pl.col(TIMESTAMP) >= times[n_train - 96])
                              & (pl.col(TIMESTAMP) < times[test_from]))
    config = ForecasterConfig(lookback=96, horizon=96, target_transform="log_return",
                              calendar=False, max_windows_per_epoch=args.f2_windows,
                              train=TrainConfig(max_epochs=args.f2_epochs, batch_size=64,
                                                device="cpu", seed=0, early_stopping_patience=2),
                              encoder=EncoderConfig(cell="lstm", hidden_size=args.f2_hidden),
                              output="point")
    begun = time.perf_counter()
    model = RNNForecaster(config).fit(train, validation=validation)
    train_s = time.perf_counter() - begun
    origins = np.arange(test_from, n - 96 + 1, args.f2_every)
    errors, naive = [], []
    begun = time.perf_counter()
    for origin in origins.tolist():
        history = frame.filter((pl.col(TIMESTAMP) >= times[origin - 96])
                               & (pl.col(TIMESTAMP) < times[origin]))
        forecast = model.predict(frame=history).sort(CHANNEL, "step")
        predicted = forecast[Y_HAT].to_numpy().reshape(len(channels), 96).T
        truth = values[origin:origin + 96]
        errors.append((predicted - mean) / std - (truth - mean) / std)
        naive.append((values[origin - 1] - truth) / std)
    errors, naive = np.stack(errors), np.stack(naive)
    return {"f2": {
        "mse": float((errors ** 2).mean()), "mae": float(np.abs(errors).mean()),
        "repeat_last_mse": float((naive ** 2).mean()),
        "repeat_last_mae": float(np.abs(naive).mean()),
        "beats_repeat_last": bool((errors ** 2).mean() < (naive ** 2).mean()),
        "n_windows": int(origins.size), "window_stride": args.f2_every,
        "epochs_run": len(model.history_), "hidden": args.f2_hidden,
        "windows_per_epoch": args.f2_windows, "fx": str(args.fx),
        "train_s": train_s, "predict_s": time.perf_counter() - begun},
        "train_s": train_s}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["f1", "f2", "both"], default="both")
    parser.add_argument("--csv", type=Path, nargs="*", default=None,
                        help="OHLC file(s) for F1 instead of arch.data")
    parser.add_argument("--arch", nargs="*", default=["sp500", "nasdaq"])
    parser.add_argument("--fx", type=Path,
                        default=SHARED_DATA / "finance" / "exchange_rate.txt.gz")
    parser.add_argument("--test-years", type=int, default=4)
    parser.add_argument("--garch-refit", type=int, default=21)
    parser.add_argument("--rnn-refit", type=int, default=126)
    parser.add_argument("--rnn-hidden", type=int, default=32)
    parser.add_argument("--rnn-epochs", type=int, default=30)
    parser.add_argument("--rnn-windows", type=int, default=4096)
    parser.add_argument("--f2-hidden", type=int, default=32)
    parser.add_argument("--f2-epochs", type=int, default=20)
    parser.add_argument("--f2-windows", type=int, default=2048)
    parser.add_argument("--f2-every", type=int, default=1, help="stride of F2 test windows")
    parser.add_argument("--quick", action="store_true", help="tiny budget, < 1 min")
    parser.add_argument("--write", action="store_true",
                        help="write benchmarks/results/finance.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.test_years, args.garch_refit, args.rnn_refit = 1, 126, 252
        args.rnn_epochs, args.rnn_windows, args.f2_epochs, args.f2_every = 1, 256, 1, 96
        args.f2_windows = 128
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    begun = time.perf_counter()
    result: dict = {"quick": args.quick, "train_s": 0.0}
    for part, run in (("f1", f1), ("f2", f2)):
        if args.part in (part, "both"):
            figures = run(args)
            result["train_s"] += figures.pop("train_s")
            result.update(figures)
    result["predict_s"] = time.perf_counter() - begun - result["train_s"]
    result["wall_s"] = time.perf_counter() - begun
    if not args.write:
        import _common

        _common.RESULTS_DIR = Path(tempfile.mkdtemp())
    write_result("finance_quick" if args.quick else "finance", result, device="cpu",
                 extra_versions=("arch",))


if __name__ == "__main__":
    main()
