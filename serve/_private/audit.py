"""An append-only JSON-lines audit log: one line per decision, flushed as it is written."""

from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]


class AuditLog:
    """Appends records to ``path`` and keeps the newest ``keep`` in memory for quick reads.

    Args:
        path: The file (its folder is created).
        keep: How many recent records :meth:`recent` can return.
    """

    def __init__(self, path: Path, keep: int = 500) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        if self.path.exists():
            with self.path.open() as f:
                for line in f:
                    if line.strip():
                        self._recent.append(json.loads(line))

    def write(self, record: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            self._recent.append(record)

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` records, oldest first."""
        with self._lock:
            return list(self._recent)[-limit:]
