"""``python -m anklet.dev.fake_github``: serve a fake GitHub until SIGINT/SIGTERM.

Prints the API base URL on the first line of stdout (and writes it to ``--url-file`` when
given) once it is listening, so a parent process can read it; exits 0 on a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from anklet.dev.fake_github.server import FakeGitHub


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m anklet.dev.fake_github", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret-file", type=Path, default=None, help="file holding the hook secret")
    parser.add_argument("--token", action="append", default=None, help="accepted token (repeatable)")
    parser.add_argument("--app-id", type=int, default=None)
    parser.add_argument("--app-public-key-file", type=Path, default=None, help="PEM to verify App JWTs")
    parser.add_argument("--hook-id", type=int, default=1)
    parser.add_argument("--lost-runner-timeout", type=float, default=120.0)
    parser.add_argument("--url-file", type=Path, default=None, help="also write the URL here")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    secret = args.webhook_secret_file.read_text().strip() if args.webhook_secret_file else ""
    public_key = args.app_public_key_file.read_text() if args.app_public_key_file else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeGitHub(
        webhook_url=args.webhook_url,
        webhook_secret=secret,
        host=args.host,
        port=args.port,
        tokens=tuple(args.token or ("ghp_dev_token",)),
        app_id=args.app_id,
        app_public_key_pem=public_key,
        hook_id=args.hook_id,
        lost_runner_timeout=args.lost_runner_timeout,
    ) as fake:
        if args.url_file:
            args.url_file.write_text(fake.url + "\n")
        print(fake.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
