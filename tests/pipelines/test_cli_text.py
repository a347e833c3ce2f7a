"""Text from data reaches the terminal as text: no Rich markup, no raw control characters."""

from __future__ import annotations

from typer.testing import CliRunner

from recurra.pipelines.cli import app
from recurra.pipelines.cli_text import safe, visible

HOSTILE = ["[/bold]", "[red]x", "a\x1b[31mred", "b\x1b]0;title\x07", "nul\x00id"]


def test_visible_and_safe_on_hand_made_strings():
    assert visible("a\x1b[31m") == "a\\x1b[31m"
    assert visible("x\x00\u200by") == "x\\x00\\u200by"
    assert visible("plain text, é") == "plain text, é"
    assert safe("[/bold]") == "\\[/bold]"


def test_store_commands_print_hostile_ids_and_cells_literally(tmp_path):
    csv = tmp_path / "hostile.csv"
    lines = ["series_id,timestamp,value"]
    for index, series in enumerate(HOSTILE):
        lines.append(f"{series},2024-01-01 0{index}:00:00,1.0")
        lines.append(f"{series},bad-ts-{series},2.0")
    csv.write_bytes(("\n".join(lines) + "\n").encode())
    store = str(tmp_path / "store")
    runner = CliRunner()
    ingest = runner.invoke(app, ["ingest", str(csv), "-o", "layout=long", "--store", store,
                                 "--allow-rejects"])
    assert ingest.exit_code == 0, ingest.output
    for command in (["store", "summary"], ["store", "quarantine", "--limit", "20"]):
        result = runner.invoke(app, [*command, "--store", store])
        assert result.exit_code == 0, (command, result.output, result.exception)
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "\x00" not in result.output
        flat = result.output.replace("\n", "").replace("│", "").replace(" ", "")
        assert "[/bold]" in flat and "[red]x" in flat
        if command[1] == "quarantine":  # ids with control characters are rejected there
            assert "\\x1b" in flat and "controlcharacterinseries_id" in flat
