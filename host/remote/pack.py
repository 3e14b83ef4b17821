"""``host device pack``: the device side as one file, a zipapp run with ``python3 edgeshrink-device.pyz ...``."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipapp
from pathlib import Path
from typing import Dict

from edgeshrink.host.io import atomic_path, prepare_file
from edgeshrink.host.remote.base import DEVICE_PKG, device_tree_hash

_MAIN = "import sys\nfrom device.__main__ import main\nsys.exit(main())\n"  # the package is ``device`` in the archive


def pack_device(out: str) -> Dict[str, object]:
    """Write ``device/`` (without ``__pycache__``) and a ``__main__`` into the zipapp ``out`` (atomically).

    The archive runs with the board's ``python3`` (>= 3.8) and needs numpy and one runtime there, like the folder.

    Returns:
        ``{"path", "files", "bytes", "device_sha256"}``.
    """
    prepare_file(out, "-o")
    with tempfile.TemporaryDirectory(prefix="edgeshrink-pack-") as tmp:
        stage = Path(tmp) / "app"
        shutil.copytree(DEVICE_PKG, stage / "device", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (stage / "__main__.py").write_text(_MAIN, encoding="utf-8")
        files = sum(1 for p in stage.rglob("*") if p.is_file())
        with atomic_path(out) as part:
            zipapp.create_archive(stage, str(part), interpreter="/usr/bin/env python3", compressed=True)
    os.chmod(out, os.stat(out).st_mode | 0o111)  # runnable as ./edgeshrink-device.pyz too
    return {"path": out, "files": files, "bytes": os.path.getsize(out), "device_sha256": device_tree_hash()}
