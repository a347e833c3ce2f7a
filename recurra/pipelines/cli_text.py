"""Text from data, made safe for the terminal.

Series ids, cells, file names and error messages come from user files. They are never
interpreted as Rich markup (``[/bold]`` would raise ``MarkupError``, ``[red]x`` would hide
``[red]``) and control characters (ESC, OSC, NUL, ...) are shown visibly as ``\\x1b`` etc.
instead of reaching the terminal raw.
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

_KEEP = {" "}


def visible(text: object) -> str:
    """``"a\\x1b[31mb"`` -> ``"a\\\\x1b[31mb"``: control and format characters as escapes.

    Example: ``visible("id\\x00") == "id\\\\x00"``.
    """
    out = []
    for char in str(text):
        if char not in _KEEP and unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def safe(text: object) -> str:
    """Text for ``Console.print`` and Rich tables: visible control characters, escaped markup.

    Example: ``safe("[/bold]") == "\\\\[/bold]"``.
    """
    return escape(visible(text))
