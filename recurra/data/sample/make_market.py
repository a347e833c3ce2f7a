"""Extract ``market_daily.csv.gz``: real daily OHLCV of the S&P 500 and NASDAQ Composite.

The rows are copied unmodified (values rounded to 4 decimals) from the data sets bundled
with the ``arch`` package (``arch.data.sp500``, ``arch.data.nasdaq``; NCSA license, see
SOURCES.md), trading days 2016-01-04 .. 2018-12-31. Exchange holidays have no row; the
business-day loader turns them into gaps. Re-running reproduces the file byte for byte::

    python recurra/data/sample/make_market.py
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

FIRST, LAST = "2016-01-01", "2018-12-31"
SYMBOLS = {"market/SP500": "sp500", "market/NASDAQ": "nasdaq"}
OUT = Path(__file__).resolve().parent / "market_daily.csv.gz"


def extract() -> list[str]:
    import importlib

    lines = ["symbol,date,open,high,low,close,adj_close,volume"]
    for symbol, module in SYMBOLS.items():
        data = importlib.import_module(f"arch.data.{module}").load().loc[FIRST:LAST]
        for day, row in data.iterrows():
            lines.append(f"{symbol},{day.date().isoformat()},{row['Open']:.4f},"
                         f"{row['High']:.4f},{row['Low']:.4f},{row['Close']:.4f},"
                         f"{row['Adj Close']:.4f},{int(row['Volume'])}")
    return lines


def main() -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(OUT.name, "wb", fileobj=buffer, mtime=0) as handle:
        handle.write(("\n".join(extract()) + "\n").encode())
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
