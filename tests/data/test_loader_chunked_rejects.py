"""Regression: a long-layout CSV of a few thousand rows with two or more text cells in the
value column made polars panic ("assertion failed: i < self.len()") while building the
rejection messages, instead of quarantining the two rows."""

from recurra.data.loaders import load_sensor


def test_several_rejected_cells_in_a_multi_chunk_file(tmp_path):
    lines = ["series_id,timestamp,value"]
    lines += [f"a{i},2024-01-01T00:00:00Z,1" for i in range(3000)]
    lines += ["b,2024-01-02T00:00:00Z,x", "c,2024-01-02T00:00:00Z,y"]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    result = load_sensor(path, layout="long")
    assert result.rejected["line"].to_list() == [3002, 3003]
    assert result.rejected["reason"].to_list() == ["text in numeric column 'value': 'x'",
                                                   "text in numeric column 'value': 'y'"]
    assert result.frame.height == 3000
