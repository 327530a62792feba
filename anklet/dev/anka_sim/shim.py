"""Install the simulator as an executable named ``anka``, for code that runs plain ``anka``.

The dev stack puts a directory holding this shim first on the ``PATH`` of each simulated Mac's
agent, so production code paths run unchanged against the simulator.
"""

from __future__ import annotations

import shlex
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from anklet.dev.anka_sim.config import TIME_SCALE_ENV
from anklet.dev.anka_sim.paths import HOME_ENV


def install_shim(
    bin_dir: str | Path,
    *,
    home: str | Path | None = None,
    time_scale: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Write ``bin_dir/anka`` that execs the simulator with this interpreter; returns its path.

    ``home`` and ``time_scale`` pin ``ANKA_SIM_HOME`` / ``ANKA_SIM_TIME_SCALE`` for every call
    through this shim (one simulated Mac per bin dir); ``env`` adds further variables.
    """
    directory = Path(bin_dir)
    directory.mkdir(parents=True, exist_ok=True)
    exports = dict(env or {})
    if home is not None:
        exports[HOME_ENV] = str(Path(home).resolve())
    if time_scale is not None:
        exports[TIME_SCALE_ENV] = repr(float(time_scale))
    lines = ["#!/bin/sh", "# anka simulator shim (anklet.dev.anka_sim.install_shim)"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(exports.items())]
    lines.append(f'exec {shlex.quote(sys.executable)} -m anklet.dev.anka_sim.cli "$@"')
    path = directory / "anka"
    tmp = directory / ".anka.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(path)
    return path
