"""Export a preset as a GGUF control vector, import one as a preset: every check that needs no model first."""
from __future__ import annotations

from pathlib import Path

from ..engine.control_vectors import read_control_vector
from ..engine.interchange import Exported, Imported, check_export_path, export_preset, import_control_vector
from ..engine.validation import PresetError
from .workspace import Workspace

__all__ = ["Exported", "Imported", "export", "import_file"]


def export(ws: Workspace, name: str, path: Path, strength: float | None = None, overwrite: bool = False) -> Exported:
    """Preset ``name`` for the workspace's model, written to ``path`` at ``strength`` (default: the preset's)."""
    check_export_path(path, overwrite)
    ws.store.recipe(name)  # an unknown preset is said before the model loads
    ctx = ws.model()
    with ws.lock:
        return export_preset(ws.store, name, ctx, path, strength, overwrite)


def import_file(ws: Workspace, path: Path, name: str, description: str = "", overwrite: bool = False) -> Imported:
    """A preset ``name`` from the control vector in ``path``, checked against the workspace's model."""
    ws.check_new_name(name, overwrite)
    if not path.is_file():
        raise PresetError(f"{path}: no such file")
    read_control_vector(path)  # a bad file is refused before the model loads
    return import_control_vector(ws.store, path, name, ws.model(), description, overwrite)
