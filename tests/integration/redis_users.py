"""Helpers for tests of per-host Redis users: run `anklet hosts credentials`, read ACL LOG."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from anklet.cli import build_parser


@dataclass(frozen=True)
class Issued:
    rc: int
    out: str
    log: str

    @property
    def url(self) -> str:
        [line] = [x for x in self.out.splitlines() if x.startswith("ANKLET_REDIS_URL=")]
        return line.split("=", 1)[1]

    @property
    def password(self) -> str:
        return self.url.split("@", 1)[0].rsplit(":", 1)[1]


def credentials(
    admin_url: str,
    *argv: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Issued:
    """`anklet hosts credentials ARGV` in-process (stdout captured, logs from caplog)."""
    monkeypatch.setenv("ANKLET_REDIS_URL", admin_url)
    capsys.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="anklet")
    args = build_parser().parse_args(["hosts", "credentials", *argv])
    rc: int = args.func(args)
    out, err = capsys.readouterr()
    return Issued(rc, out, caplog.text + err)


async def acl_log(admin: aioredis.Redis, user: str) -> list[dict[str, str]]:
    """ACL LOG entries (denied commands or keys, failed AUTH) of one user."""
    raw = await admin.execute_command("ACL", "LOG", "128")
    entries = []
    for entry in raw:
        fields = dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) else dict(entry)
        if fields.get("username") == user:
            entries.append({k: str(v) for k, v in fields.items()})
    return entries


async def drop_anklet_users(admin: aioredis.Redis) -> None:
    for user in await admin.acl_users():
        if str(user).startswith("anklet-"):
            await admin.acl_deluser(user)
    await admin.execute_command("ACL", "LOG", "RESET")
