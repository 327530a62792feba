"""The `anklet` command: dev stack, controller and host agent entry points."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from anklet import __version__
from anklet.logs import setup_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

log = logging.getLogger("anklet")


def _run_until_signal(main: Coroutine[Any, Any, int], graceful: Callable[[], bool] | None = None) -> int:
    """Run `main`; SIGINT/SIGTERM stop it and count as a clean stop.

    With `graceful`, the first signal calls it; when it returns True the process winds down by
    itself and only a second signal cancels at once. Otherwise the first signal cancels.
    """

    async def runner() -> int:
        task = asyncio.create_task(main)
        loop = asyncio.get_running_loop()
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if graceful is not None and not stopped and graceful():
                stopped = True
                return
            stopped = True
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            return await task
        except asyncio.CancelledError:
            if stopped:
                log.info("stopped by signal")
                return EXIT_OK
            raise

    return asyncio.run(runner())


def cmd_controller(args: argparse.Namespace) -> int:
    import kopf

    from anklet.config import ControllerSettings

    try:
        settings = ControllerSettings()
    except ValidationError as exc:
        log.error("invalid controller configuration: %s", exc)
        return EXIT_CONFIG
    kubeconfig = args.kubeconfig or settings.kubeconfig
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
        os.environ["ANKLET_KUBECONFIG"] = kubeconfig
    import controller.operator  # noqa: F401  (registers the handlers)

    namespaces = args.namespace or settings.namespaces
    return _run_until_signal(_kopf_main(kopf, namespaces=namespaces, liveness=args.liveness))


async def _kopf_main(kopf: Any, *, namespaces: list[str], liveness: str | None) -> int:
    await kopf.operator(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from anklet.config import AgentSettings
    from anklet.redis_protocol import HostProtocol, connect
    from host_agent.agent import Agent, AgentConfig
    from host_agent.anka import AnkaCLI, AnkaError
    from host_agent.facts import HostFacts, StartRefused

    try:
        s = AgentSettings()
    except ValidationError as exc:
        log.error("invalid agent configuration: %s", exc)
        return EXIT_CONFIG
    name = args.name or s.name
    state_dir = Path(args.state_dir or Path.home() / ".anklet").resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    anka = AnkaCLI(s.anka_binary)
    facts = HostFacts(
        anka=anka,
        disk_path=state_dir,
        arch=args.arch,
        cpu=s.cpu,
        memory_mib=s.memory_mib,
        reserved_cpu=s.reserved_cpu,
        reserved_memory_mib=s.reserved_memory_mib,
        vm_slots=s.vm_slots,
        overcommit=s.overcommit,
        labels=s.labels,
        queues=s.queues,
        mounts=s.mounts,
    )
    config = AgentConfig(
        name=name,
        state_dir=state_dir,
        resync_seconds=s.resync_seconds,
        orphan_grace_seconds=s.orphan_grace_seconds,
        ready_timeout=s.ready_timeout_seconds,
        ready_poll=s.ready_poll_seconds,
        output_tail=s.output_tail_bytes,
        shutdown_grace=s.shutdown_grace_seconds,
        mounts=tuple(s.mounts),
        disk_buffer_percent=s.template_disk_buffer_percent,
        disk_buffer_bytes=s.template_disk_buffer_bytes,
    )
    holder: list[Agent] = []

    async def main() -> int:
        try:
            await facts.preflight()
        except StartRefused as exc:
            log.error("refusing to start: %s", exc)
            return EXIT_CONFIG
        except (AnkaError, OSError) as exc:
            log.error("refusing to start: cannot run anka (%s): %s", s.anka_binary, exc)
            return EXIT_CONFIG
        redis = connect(s.redis_url.get_secret_value())
        agent = Agent(config, HostProtocol(redis, name), anka, facts)
        holder.append(agent)
        try:
            await agent.run()
        finally:
            await redis.aclose()
        log.info("agent stopped")
        return EXIT_OK

    def graceful() -> bool:
        for agent in holder:
            agent.request_stop()
        return bool(holder)

    return _run_until_signal(main(), graceful)


def cmd_receiver(args: argparse.Namespace) -> int:
    """The GitHub webhook receiver (settings: ANKLET_RECEIVER_* and ANKLET_GITHUB_* env)."""
    from plugins.receivers.github.config import ConfigError, load_config
    from plugins.receivers.github.receiver import serve

    flags = {"host": args.host, "port": args.port, "namespace": args.namespace, "kubeconfig": args.kubeconfig}
    try:
        config = load_config(**{key: value for key, value in flags.items() if value is not None})
    except ConfigError as exc:
        log.error("invalid receiver configuration: %s", exc)
        return EXIT_CONFIG

    async def main() -> int:
        try:
            await serve(config)
        except ConfigError as exc:
            log.error("receiver cannot start: %s", exc)
            return EXIT_CONFIG
        return EXIT_OK

    return _run_until_signal(main())


def cmd_dev(args: argparse.Namespace) -> int:
    from anklet.dev.stack import DevStack, DevStackError

    state_dir = Path(args.state_dir).resolve() if args.state_dir else None
    stack = DevStack(hosts=args.hosts, state_dir=state_dir, time_scale=args.time_scale)
    try:
        if args.demo:
            return _run_until_signal(stack.demo(Path(args.examples), timeout=args.timeout))
        return _run_until_signal(stack.serve())
    except DevStackError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG


def cmd_hosts(args: argparse.Namespace) -> int:
    from anklet import hosts_cli

    try:
        with hosts_cli.client(args.kubeconfig) as http:
            if args.action == "list":
                return hosts_cli.list_hosts(http)
            if args.name is None:
                log.error("anklet hosts %s needs a host name", args.action)
                return EXIT_CONFIG
            if args.action in ("cordon", "uncordon"):
                return hosts_cli.set_cordon(http, args.name, args.action == "cordon")
            return hosts_cli.drain(http, args.name, timeout=args.timeout)
    except hosts_cli.HostsError as exc:
        log.error("%s", exc)
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anklet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"anklet {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="run everything locally: API emulator, Redis, controller, simulated Macs"
    )
    dev.add_argument("--hosts", type=int, default=2, help="simulated Macs (default 2)")
    dev.add_argument("--state-dir", help="where state, logs, kubeconfig and endpoints.json go")
    dev.add_argument("--demo", action="store_true", help="apply examples/, wait for their phases, exit")
    dev.add_argument("--examples", default="examples", help="directory of AnkaJob YAML for --demo")
    dev.add_argument("--timeout", type=float, default=240.0, help="--demo gives up after this many seconds")
    dev.add_argument("--time-scale", type=float, default=0.02, help="simulated Anka latency multiplier")
    dev.set_defaults(func=cmd_dev)

    ctl = sub.add_parser("controller", help="run the kopf controller (in-cluster or with a kubeconfig)")
    ctl.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    ctl.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces")
    ctl.add_argument("--liveness", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    ctl.set_defaults(func=cmd_controller)

    hosts = sub.add_parser("hosts", help="list Macs, or cordon / uncordon / drain one")
    hosts.add_argument("action", nargs="?", default="list", choices=["list", "cordon", "uncordon", "drain"])
    hosts.add_argument("name", nargs="?", help="the host (AnkaHost name)")
    hosts.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    hosts.add_argument("--timeout", type=float, default=3600.0, help="drain gives up after this many seconds")
    hosts.set_defaults(func=cmd_hosts)

    agent = sub.add_parser("agent", help="run the host agent on a Mac (settings: ANKLET_AGENT_* env)")
    agent.add_argument("--name", help="host name (default: ANKLET_AGENT_NAME or the hostname)")
    agent.add_argument("--state-dir", help="agent state and lock files (default ~/.anklet)")
    agent.add_argument("--arch", choices=["arm64", "amd64"], help="override the detected architecture")
    agent.set_defaults(func=cmd_agent)

    rcv = sub.add_parser(
        "receiver", help="run the GitHub webhook receiver (settings: ANKLET_RECEIVER_*, ANKLET_GITHUB_* env)"
    )
    rcv.add_argument("--host", help="listen address (default ANKLET_RECEIVER_HOST or 0.0.0.0)")
    rcv.add_argument("--port", type=int, help="listen port, 0 = any free one (default ANKLET_RECEIVER_PORT)")
    rcv.add_argument("--namespace", "-n", help="namespace for AnkaJobs (default ANKLET_RECEIVER_NAMESPACE)")
    rcv.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    rcv.set_defaults(func=cmd_receiver)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
