"""The runner "release": a tarball shaped like ``actions-runner-osx-<arch>-<version>.tar.gz``.

The dev stack's simulated ``anka run`` executes the VM's commands on the Linux host, so the real
in-VM install script downloads this tarball, checks its SHA-256 and starts ``run.sh`` from it.

- ``GET /_sim/releases/latest``: ``{"version", "tag_name", "body", "assets": [{"name", "url",
  "browser_download_url", "sha256", "sha256_url", "size"}]}``; ``body`` also carries the
  checksums between ``<!-- BEGIN SHA osx-<arch> -->`` markers as GitHub's release notes do
- ``GET /_sim/releases/actions-runner-osx-{arm64|x64}-{RUNNER_VERSION}.tar.gz``: the tarball
- the same URL + ``.sha256``: ``<hex>  <name>`` (``shasum -a 256 -c`` / ``sha256sum -c`` format)

Tarballs are built once per arch, deterministically (fixed mtimes, owners and gzip header), so
the checksum is stable across restarts of the fake for the same ``runner.py``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import re
import tarfile
from importlib import resources

from aiohttp import web

from anklet.dev.fake_github.context import context
from anklet.dev.fake_github.errors import not_found

RUNNER_VERSION = "2.330.0"
ARCHES = ("arm64", "x64")
RELEASES_PATH = "/_sim/releases"
#: 2023-11-14T22:13:20Z: any fixed time makes the archive reproducible.
FIXED_MTIME = 1_700_000_000
_ASSET = re.compile(r"^actions-runner-osx-(arm64|x64)-(\d+\.\d+\.\d+)\.tar\.gz(\.sha256)?$")

RUN_SH = """#!/usr/bin/env bash
# Anklet fake GitHub: stand-in for the actions runner's run.sh (the real one starts Runner.Listener).
# Takes --jitconfig <config>, or reads ACTIONS_RUNNER_INPUT_JITCONFIG, like the real runner.
exec python3 "$(dirname "$0")/runner.py" "$@"
"""

CONFIG_SH = """#!/usr/bin/env bash
# Anklet fake GitHub: registration-token configuration is not supported.
echo "config.sh is not supported by this runner: use the JIT config" \\
     "(./run.sh --jitconfig <encoded_jit_config>, or ACTIONS_RUNNER_INPUT_JITCONFIG)" >&2
exit 1
"""


def asset_name(arch: str, version: str = RUNNER_VERSION) -> str:
    return f"actions-runner-osx-{arch}-{version}.tar.gz"


def runner_source() -> str:
    return resources.files("anklet.dev.fake_github").joinpath("runner.py").read_text(encoding="utf-8")


@functools.cache
def tarball(arch: str, version: str = RUNNER_VERSION) -> bytes:
    """The release tarball for ``arch``, built once and cached (same bytes every time)."""
    files = [
        (".runner-version", f"{version}\n", 0o644),
        ("config.sh", CONFIG_SH, 0o755),
        ("run.sh", RUN_SH, 0o755),
        ("runner.py", runner_source(), 0o644),
    ]
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name, text, mode in files:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def sha256(arch: str, version: str = RUNNER_VERSION) -> str:
    return hashlib.sha256(tarball(arch, version)).hexdigest()


async def latest(request: web.Request) -> web.Response:
    base = f"{context(request).base_url}{RELEASES_PATH}"
    assets = []
    for arch in ARCHES:
        name = asset_name(arch)
        assets.append(
            {
                "name": name,
                "url": f"{base}/{name}",
                "browser_download_url": f"{base}/{name}",
                "sha256": sha256(arch),
                "sha256_url": f"{base}/{name}.sha256",
                "size": len(tarball(arch)),
            }
        )
    # GitHub's runner releases publish checksums in the release notes between these markers.
    body = "\n".join(
        f"- {a['name']}: <!-- BEGIN SHA osx-{arch} -->{a['sha256']}<!-- END SHA osx-{arch} -->"
        for arch, a in zip(ARCHES, assets, strict=True)
    )
    return web.json_response(
        {"version": RUNNER_VERSION, "tag_name": f"v{RUNNER_VERSION}", "body": body, "assets": assets}
    )


async def download(request: web.Request) -> web.Response:
    match = _ASSET.match(request.match_info["name"])
    if match is None or match.group(2) != RUNNER_VERSION:
        raise not_found()
    arch, checksum = match.group(1), match.group(3)
    if checksum:
        return web.Response(text=f"{sha256(arch)}  {asset_name(arch)}\n", content_type="text/plain")
    return web.Response(
        body=tarball(arch),
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{asset_name(arch)}"'},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{RELEASES_PATH}/latest", latest)
    app.router.add_get(f"{RELEASES_PATH}/{{name}}", download)
