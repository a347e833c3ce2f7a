"""Malformed files never raise anything but a RecurraError, and the record count holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from recurra.data import loaders
from recurra.data.schema import RecurraError, validate_frame

TIMESTAMPS = st.sampled_from([
    "2024-01-01 00:00:00", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00+02:00", "2024-02-30",
    "2024-01-01", "yesterday", "", "NA", "2024-13-01 00:00", "1e9", "2024/01/03 04:05",
])
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.sampled_from(["NA", "", "nan", "inf", "-inf", "abc", "1,5", '"3"', " 7 ", "1e400",
                     "-1"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
SEPARATORS = st.sampled_from([",", ",", ",", ";", "\t"])


@st.composite
def csv_text(draw) -> str:
    header = draw(st.sampled_from(["timestamp,value", "timestamp,a,b", "timestamp;value",
                                   "value,timestamp", "", "time,value"]))
    lines = [header]
    for _ in range(draw(st.integers(0, 12))):
        fields = [draw(TIMESTAMPS)] + [draw(NUMBERS) for _ in range(draw(st.integers(0, 3)))]
        lines.append(draw(SEPARATORS).join(fields))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))


def check(result: loaders.LoadResult) -> None:
    assert result.n_rows_in == result.n_rows_kept + result.rejected.height
    assert validate_frame(result.frame).equals(result.frame)  # already canonical
    assert (result.rejected["line"] >= 1).all()


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=csv_text())
def test_sensor_loader_never_raises_unhandled(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        for layout in ("wide", "long"):
            try:
                check(loaders.load_sensor(path, layout=layout))
            except RecurraError:
                pass


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise_unhandled(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bytes.csv"
        path.write_bytes(data)
        for load in (loaders.load_sensor, loaders.load_nab, loaders.load_physionet,
                     loaders.load_prices, loaders.load_air_quality,
                     lambda p: loaders.load_matrix(p, "m")):
            try:
                check(load(path))
            except RecurraError:
                pass


@FUZZ
@given(rows=st.lists(st.tuples(st.integers(-2, 3), st.sampled_from(["00:00", "01:30", "x",
                                                                    "48:00", "1:2:3"]),
                               st.sampled_from(["HR", "Age", "RecordID", ""]), NUMBERS),
                     max_size=10))
def test_physionet_loader_on_malformed_records(rows):
    text = "RecordID,Time,Parameter,Value\n" + "\n".join(
        ",".join(map(str, row)) for row in rows) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.csv"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            check(loaders.load_physionet(path))
        except RecurraError:
            pass
