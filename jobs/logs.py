"""Reading job log files."""

from __future__ import annotations

from pathlib import Path


def read_log_tail(path: str | Path | None, lines: int = 200, max_bytes: int = 256_000) -> str:
    """The last ``lines`` lines of a log (reads at most ``max_bytes`` from its end)."""
    if not path:
        return ""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        return ""
    with open(p, "rb") as fh:
        fh.seek(max(0, size - max_bytes))
        data = fh.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:]) + ("\n" if data else "")
