"""Generate ``prices_synthetic.csv.gz``: a SYNTHETIC business-day OHLCV price series.

No freely licensed real price data is available offline, so the bundled financial sample is
simulated (geometric Brownian motion with a volatility regime and volume spikes, fixed seed)
and clearly labelled as such. Re-running this script reproduces the file byte for byte::

    python data/sample/make_prices.py
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import numpy as np

SEED = 20240101
START = dt.date(2021, 1, 4)
N_DAYS = 750
MISSING_DAYS = (57, 58, 301, 612)  # business days left out: gaps the loader must keep
OUT = Path(__file__).resolve().parent / "prices_synthetic.csv.gz"


def business_days(start: dt.date, count: int) -> list[dt.date]:
    days, day = [], start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def simulate(seed: int = SEED) -> list[str]:
    rng = np.random.default_rng(seed)
    volatility = np.where(np.arange(N_DAYS) % 250 < 200, 0.012, 0.03)
    returns = 0.0003 + volatility * rng.standard_normal(N_DAYS)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(0.002 * rng.standard_normal(N_DAYS))
    spread = np.abs(rng.normal(0, volatility, N_DAYS)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.lognormal(13, 0.3, N_DAYS) * (1 + 4 * (rng.random(N_DAYS) < 0.02))
    lines = ["date,open,high,low,close,volume"]
    for i, day in enumerate(business_days(START, N_DAYS)):
        if i in MISSING_DAYS:
            continue
        lines.append(f"{day.isoformat()},{open_[i]:.4f},{high[i]:.4f},{low[i]:.4f},"
                     f"{close[i]:.4f},{int(volume[i])}")
    return lines


def main() -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(OUT.name, "wb", fileobj=buffer, mtime=0) as handle:
        handle.write(("\n".join(simulate()) + "\n").encode())
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
