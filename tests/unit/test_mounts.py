"""Host-to-guest mount specs: parsing, resolution through symlinks, de-duplication, the version gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_agent.mounts import (
    MountError,
    MountSpec,
    real_directory,
    resolve_mounts,
    split_spec,
    unsupported_reason,
)

# A fake filesystem for the resolve seam: path → real directory (symlinks already followed).
FS = {
    "/data/cache": "/data/cache",
    "/data/link-to-cache": "/data/cache",
    "/srv/other/cache": "/srv/other/cache",
    "/srv/tools": "/srv/tools",
    "/": "/",
}


def fake_resolve(path: str) -> str | None:
    return FS.get(path.rstrip("/") or "/")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("/data/cache", ("/data/cache", None), id="path-only"),
        pytest.param("/data/cache:deps", ("/data/cache", "deps"), id="path-and-name"),
        pytest.param("/data/cache:", ("/data/cache", None), id="empty-name-is-basename"),
        pytest.param("/data/a:b/c", ("/data/a:b/c", None), id="colon-inside-the-path"),
        pytest.param("  /data/cache:deps ", ("/data/cache", "deps"), id="whitespace-trimmed"),
    ],
)
def test_split_spec(raw: str, expected: tuple[str, str | None]) -> None:
    assert split_spec(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param([], [], id="none"),
        pytest.param(["/data/cache"], [("/data/cache", "cache")], id="name-defaults-to-basename"),
        pytest.param(["/data/cache:deps"], [("/data/cache", "deps")], id="explicit-name"),
        pytest.param(
            ["/data/link-to-cache:deps"], [("/data/cache", "deps")], id="symlink-resolved-name-kept"
        ),
        pytest.param(
            ["/data/link-to-cache"], [("/data/cache", "cache")], id="symlink-basename-is-the-real-folder"
        ),
        pytest.param(
            ["/data/cache", "/data/link-to-cache", "/data/cache/"],
            [("/data/cache", "cache")],
            id="duplicates-by-resolved-spec-dropped",
        ),
        pytest.param(
            ["/data/cache:a", "/data/cache:b"],
            [("/data/cache", "a"), ("/data/cache", "b")],
            id="same-folder-under-two-names-mounted-twice",
        ),
        pytest.param(
            ["/srv/tools", "/data/cache:deps"],
            [("/srv/tools", "tools"), ("/data/cache", "deps")],
            id="order-kept-host-then-job",
        ),
        pytest.param(["/"], [("/", "root")], id="root-gets-a-name"),
    ],
)
def test_resolve_mounts(raw: list[str], expected: list[tuple[str, str]]) -> None:
    assert resolve_mounts(raw, fake_resolve) == [MountSpec(h, n) for h, n in expected]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        pytest.param(["/nope"], "host folder /nope does not exist", id="missing-folder"),
        pytest.param(["relative/dir"], "must be absolute", id="relative-path"),
        pytest.param([":name"], "must be absolute", id="no-path"),
        pytest.param(
            ["/data/cache", "/srv/other/cache"], "'cache' is already taken by /data/cache", id="name-clash"
        ),
        pytest.param(["/data/cache:.."], "invalid guest folder name", id="dot-dot-name"),
    ],
)
def test_resolve_mounts_refuses(raw: list[str], words: str) -> None:
    with pytest.raises(MountError, match=words):
        resolve_mounts(raw, fake_resolve)


def test_real_directory_follows_symlinks_and_requires_a_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (tmp_path / "file").write_text("x")
    assert real_directory(str(tmp_path / "link")) == str(real.resolve())
    assert real_directory(str(tmp_path / "file")) is None
    assert real_directory(str(tmp_path / "missing")) is None
    assert resolve_mounts([f"{tmp_path / 'link'}:shared"]) == [MountSpec(str(real.resolve()), "shared")]


@pytest.mark.parametrize(
    ("version", "arch", "words"),
    [
        pytest.param("3.9.0", "arm64", None, id="minimum"),
        pytest.param("3.9.1 (build 216)", "arm64", None, id="with-build"),
        pytest.param("v4.0.1", "arm64", None, id="v-prefix"),
        pytest.param("3.8.9", "arm64", "need Anka >= 3.9.0; this host has 3.8.9", id="too-old"),
        pytest.param("2.5.7", "arm64", "this host has 2.5.7", id="anka-2"),
        pytest.param("3.9.1", "amd64", "Apple-silicon (arm64) host; this one is amd64", id="intel"),
        pytest.param("garbage", "arm64", "cannot read the version", id="unparsable"),
    ],
)
def test_unsupported_reason(version: str, arch: str, words: str | None) -> None:
    reason = unsupported_reason(version, arch)
    if words is None:
        assert reason is None
    else:
        assert reason is not None and words in reason
