"""One ``kubectl apply -f`` file rendered from the Helm chart with values, for e2e tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kured_testbed.chart import render_documents


def write_manifest(values: dict[str, Any], path: Path) -> Path:
    """The chart rendered with ``values`` as one ``kubectl apply -f`` file, like the released
    deploy/manifests/*.yaml (which are the defaults)."""
    documents = render_documents(values)
    path.write_text("\n---\n".join(text for text, _ in documents) + "\n")
    return path
