"""Atomic writes of files and folders: write beside the target, then rename into place.

A folder cannot replace a non-empty folder in one rename, so an existing target is first
renamed to ``<name>.old``; if a kill lands between the two renames, ``recover_folder`` (called
by every reader and writer) puts the old copy back. At any moment a reader therefore finds
the previous complete version or the new complete version, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable


def _old(final: Path) -> Path:
    return final.with_name(final.name + ".old")


def recover_folder(final: str | Path) -> None:
    final = Path(final)
    old = _old(final)
    if old.exists():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)


def replace_folder(tmp: str | Path, final: str | Path) -> Path:
    """Move the complete folder ``tmp`` to ``final``, replacing any previous version."""
    tmp, final = Path(tmp), Path(final)
    recover_folder(final)
    old = _old(final)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def temp_folder_for(final: str | Path) -> Path:
    """A fresh, empty sibling folder to write into before replace_folder."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def write_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a sibling temp file, which then replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> None:
    write_file(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: str | Path, data: bytes) -> None:
    write_file(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, obj, indent: int = 2, **dumps_kwargs) -> None:
    """``obj`` as JSON text (``json.dumps(obj, indent=indent, **dumps_kwargs)``), written atomically."""
    write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs))
