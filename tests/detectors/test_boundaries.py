"""detectors is pure: no I/O packages, never the daemon's other packages."""

from __future__ import annotations

import ast
from pathlib import Path

import detectors

FORBIDDEN = {
    "monitor",
    "storage",
    "alerts",
    "kafka",
    "sqlite3",
    "sqlite_utils",
    "httpx",
    "slack_sdk",
    "evidently",
}


def test_detectors_imports_nothing_it_must_not():
    root = Path(detectors.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, (
                    f"{path.relative_to(root)} imports {name}"
                )
