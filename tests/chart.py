"""scripts/render-manifests.py as a module: the Helm chart rendered by the real Helm engine.

The script is not importable by name (a dash, and scripts/ is no package); unit and e2e
tests load it once here instead of each with its own importlib incantation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "render_manifests", ROOT / "scripts" / "render-manifests.py"
)
assert _spec and _spec.loader
render_manifests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_manifests)


def write_manifest(values: dict[str, Any], path: Path) -> Path:
    """The chart rendered with ``values`` as one ``kubectl apply -f`` file, like the released
    deploy/manifests/*.yaml (which are the defaults)."""
    documents = render_manifests.render_documents(values)
    path.write_text("\n---\n".join(text for text, _ in documents) + "\n")
    return path
