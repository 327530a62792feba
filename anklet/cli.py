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

from anklet import __version__
from anklet.logs import add_rotating_file, setup_logging

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

    if args.metrics_port is not None:
        os.environ["ANKLET_METRICS_PORT"] = str(args.metrics_port)  # validated here, read by _kopf_main
    from anklet.config_cli import start

    effective = start(
        "controller", args, ControllerSettings={"kubeconfig": args.kubeconfig, "namespaces": args.namespace}
    )
    if effective is None:
        return EXIT_CONFIG
    settings = effective.get(ControllerSettings)
    if not _redis_reachable(settings):
        return EXIT_CONFIG
    kubeconfig = args.kubeconfig or settings.kubeconfig
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
        os.environ["ANKLET_KUBECONFIG"] = kubeconfig
    import controller.operator  # noqa: F401  (registers the handlers)

    namespaces = args.namespace or settings.namespaces
    if args.leader_election or settings.leader_election:
        return _controller_elected(kopf, settings, args, namespaces, kubeconfig)
    return _run_until_signal(_kopf_main(kopf, namespaces=namespaces, liveness=args.liveness))


def _controller_elected(
    kopf: Any, settings: Any, args: argparse.Namespace, namespaces: list[str], kubeconfig: str | None
) -> int:
    """`--leader-election`: stand by until this replica holds the Lease (see controller/ha.py)."""
    import asyncio

    from controller.ha import LeaseKeeper, run_elected
    from controller.kube import KubeClient
    from controller.leader import ElectionConfig, Timing

    config = ElectionConfig(
        namespace=args.leader_election_namespace or settings.leader_election_namespace,
        name=settings.leader_election_lease_name,
        identity=settings.leader_election_identity,
        timing=Timing(
            settings.leader_election_lease_duration_seconds,
            settings.leader_election_renew_deadline_seconds,
            settings.leader_election_retry_period_seconds,
        ),
    )
    keeper = LeaseKeeper(config, lambda: KubeClient.from_environment(kubeconfig))
    stop = asyncio.Event()

    def graceful() -> bool:
        stop.set()  # a standby stops waiting; a leader's operator stops, then the Lease is released
        return True

    async def operator(flag: asyncio.Event, ready: asyncio.Event) -> int:
        return await _kopf_main(
            kopf, namespaces=namespaces, liveness=args.liveness, stop_flag=flag, ready_flag=ready
        )

    return _run_until_signal(run_elected(keeper, operator, stop, liveness=args.liveness), graceful)


async def _kopf_main(
    kopf: Any,
    *,
    namespaces: list[str],
    liveness: str | None,
    stop_flag: Any = None,
    ready_flag: Any = None,
) -> int:
    from anklet.config import ControllerSettings
    from anklet.metrics_server import MetricsServer, start_metrics_server
    from controller.metrics import ControllerMetrics

    settings = ControllerSettings()
    metrics = ControllerMetrics()  # the operator's reconciler feeds it (through kopf's memo)
    server: MetricsServer | None = None
    host, port = settings.metrics_host, settings.metrics_port
    if port:
        try:
            server = await start_metrics_server(metrics.registry, host, port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s", host, port, exc.strerror or exc)
            return EXIT_CONFIG
        log.info("metrics at %s", server.url)
    # A crashed reconciler loop must not leave a process that answers probes but does nothing:
    # the operator stops and the process exits non-zero, so the Deployment restarts it.
    stop = stop_flag if stop_flag is not None else asyncio.Event()
    crashed: list[BaseException] = []

    def fatal(error: BaseException) -> None:
        crashed.append(error)
        stop.set()

    try:
        await kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop,
            ready_flag=ready_flag,
            memo=kopf.Memo(metrics=metrics, fatal=fatal),
        )
    finally:
        if server is not None:
            await server.close()
    if crashed:
        log.error("controller stopped after an internal error (see above); exiting for a restart")
        return EXIT_FAILED
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from anklet.config import AgentSettings
    from anklet.config_cli import start
    from anklet.redis_protocol import HostProtocol, connect
    from anklet.redis_startup import RedisUnreachable, wait_for_redis
    from host_agent.agent import Agent, AgentConfig
    from host_agent.anka import AnkaCLI, AnkaError, AnkaTimeouts
    from host_agent.detached import DetachedRuns
    from host_agent.facts import HostFacts, StartRefused
    from host_agent.metrics import AgentMetrics

    overrides = {
        "name": args.name,
        "state_dir": args.state_dir,
        "log_file": args.log_file,
        "metrics_port": args.metrics_port,
    }
    effective = start("agent", args, AgentSettings=overrides)
    if effective is None:
        return EXIT_CONFIG
    s = effective.get(AgentSettings)
    if s.log_file is not None:
        add_rotating_file(s.log_file.expanduser(), max_bytes=s.log_max_bytes, backups=s.log_backups)
    name = args.name or s.name
    state_dir = Path(s.state_dir or Path.home() / ".anklet").expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        timeouts = AnkaTimeouts.from_mapping(s.anka_timeouts)
    except ValueError as exc:
        log.error("invalid agent configuration: %s", exc)
        return EXIT_CONFIG
    metrics = AgentMetrics(disk_path=state_dir)
    anka = AnkaCLI(s.anka_binary, timeouts=timeouts, observer=metrics.anka_command)
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
        redis = connect(s.redis_url.get_secret_value(), s.redis_tls())
        try:
            await wait_for_redis(redis, s.redis_url.get_secret_value(), s.redis_connect_timeout_seconds)
        except RedisUnreachable as exc:
            log.error("%s", exc)
            await redis.aclose()
            return EXIT_CONFIG
        server = None
        if s.metrics_port:
            from anklet.metrics_server import start_metrics_server

            try:
                server = await start_metrics_server(metrics.registry, s.metrics_host, s.metrics_port)
            except OSError as exc:
                where = f"{s.metrics_host}:{s.metrics_port}"
                log.error("cannot serve metrics on %s: %s", where, exc.strerror or exc)
                await redis.aclose()
                return EXIT_CONFIG
            log.info("metrics at %s", server.url)
        runs = DetachedRuns.for_cli(anka, state_dir / "runs")  # workload results outlive the agent
        agent = Agent(config, HostProtocol(redis, name), anka, facts, metrics=metrics, runs=runs)
        holder.append(agent)
        try:
            await agent.run()
        finally:
            await redis.aclose()
            if server is not None:
                await server.close()
        log.info("agent stopped")
        return EXIT_OK

    def graceful() -> bool:
        for agent in holder:
            agent.request_stop()
        return bool(holder)

    return _run_until_signal(main(), graceful)


def cmd_receiver(args: argparse.Namespace) -> int:
    """The GitHub webhook receiver (settings: ANKLET_RECEIVER_* and ANKLET_GITHUB_* env)."""
    from anklet.config_cli import start
    from plugins.receivers.github.config import ConfigError, load_config
    from plugins.receivers.github.receiver import serve

    flags = {"host": args.host, "port": args.port, "namespace": args.namespace, "kubeconfig": args.kubeconfig}
    if start("receiver", args, ReceiverSettings=flags) is None:
        return EXIT_CONFIG
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


def cmd_agent_install(args: argparse.Namespace) -> int:
    from anklet.agent_install import install

    return install(config=args.config, label=args.label, home=args.home, load_job=not args.no_load)


def cmd_agent_uninstall(args: argparse.Namespace) -> int:
    from anklet.agent_install import uninstall

    return uninstall(label=args.label, home=args.home, load_job=not args.no_load, purge=args.purge)


def _redis_reachable(settings: Any) -> bool:
    """At start: Redis answers within redis.connect_timeout_seconds, else one line (exit 2)."""
    from anklet.redis_protocol import connect
    from anklet.redis_startup import RedisUnreachable, wait_for_redis

    url = settings.redis_url.get_secret_value()

    async def check() -> None:
        client = connect(url, settings.redis_tls())
        try:
            await wait_for_redis(client, url, settings.redis_connect_timeout_seconds)
        finally:
            await client.aclose()

    try:
        asyncio.run(check())
    except RedisUnreachable as exc:
        log.error("%s", exc)
        return False
    return True


def cmd_dev(args: argparse.Namespace) -> int:
    from anklet.dev.stack import DevStack, DevStackError

    state_dir = Path(args.state_dir).resolve() if args.state_dir else None
    stack = DevStack(
        hosts=args.hosts,
        state_dir=state_dir,
        time_scale=args.time_scale,
        redis_sentinel=args.redis_sentinel,
        redis_appendonly=args.redis_sentinel,
    )
    try:
        if args.demo:
            return _run_until_signal(stack.demo(Path(args.examples), timeout=args.timeout))
        return _run_until_signal(stack.serve())
    except DevStackError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG


def cmd_hosts(args: argparse.Namespace) -> int:
    from anklet import hosts_cli

    if args.action == "credentials":
        from anklet import credentials_cli

        if args.output not in (None, "env", "yaml"):
            log.error("anklet hosts credentials prints -o env or -o yaml, not %s", args.output)
            return EXIT_CONFIG
        return credentials_cli.run(args)
    if args.output == "env":
        log.error("-o env is for anklet hosts credentials; a listing is -o table|wide|json|yaml")
        return EXIT_CONFIG
    try:
        with hosts_cli.client(args.kubeconfig) as http:
            if args.action == "list":
                return hosts_cli.list_hosts(http, output=args.output or "table")
            if args.name is None:
                log.error("anklet hosts %s needs a host name", args.action)
                return EXIT_CONFIG
            if args.action in ("cordon", "uncordon"):
                return hosts_cli.set_cordon(http, args.name, args.action == "cordon")
            return hosts_cli.drain(http, args.name, timeout=args.timeout)
    except hosts_cli.HostsError as exc:
        log.error("%s", exc)
        return EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    from anklet import status_cli

    return status_cli.status_command(args)


def cmd_jobs(args: argparse.Namespace) -> int:
    from anklet import status_cli

    return status_cli.jobs_command(args)


def cmd_explain(args: argparse.Namespace) -> int:
    from anklet import status_cli

    return status_cli.explain_command(args)


def _phase_argument(text: str) -> str:
    from anklet.status_cli import phase_argument

    return phase_argument(text)


def _view_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, then in-cluster)")
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anklet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"anklet {__version__}")
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, ... (default: the settings' log_level, else LOG_LEVEL, else INFO)"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "text"],
        help="log lines as JSON or (colored) text; auto: text on a terminal, JSON otherwise "
        "(default: ANKLET_LOG_FORMAT, else auto)",
    )
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
    dev.add_argument(
        "--redis-sentinel",
        action="store_true",
        help="run Redis as primary + replica + 3 Sentinels (append-only) and connect through the Sentinels",
    )
    dev.set_defaults(func=cmd_dev)

    ctl = sub.add_parser("controller", help="run the kopf controller (in-cluster or with a kubeconfig)")
    ctl.add_argument("--config", help=CONFIG_HELP)
    ctl.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    ctl.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces")
    ctl.add_argument("--liveness", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    ctl.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port, 0: off (default ANKLET_METRICS_PORT, else 9090)",
    )
    ctl.add_argument(
        "--leader-election",
        action="store_true",
        default=None,
        help="run as one of several replicas: act only while holding the Lease (ANKLET_LEADER_ELECTION)",
    )
    ctl.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease (default: $POD_NAMESPACE, else anklet-system)",
    )
    ctl.set_defaults(func=cmd_controller)

    hosts = sub.add_parser(
        "hosts", help="list Macs, cordon / uncordon / drain one, or issue its Redis credentials"
    )
    hosts.add_argument(
        "action", nargs="?", default="list", choices=["list", "cordon", "uncordon", "drain", "credentials"]
    )
    hosts.add_argument("name", nargs="?", help="the host (AnkaHost name)")
    hosts.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, then in-cluster)")
    hosts.add_argument("--timeout", type=float, default=3600.0, help="drain gives up after this many seconds")
    hosts.add_argument(
        "-o",
        "--output",
        choices=["table", "wide", "json", "yaml", "env"],
        help="listing: table (default), wide, json, yaml; credentials: env (default) or yaml",
    )
    from anklet.credentials_cli import add_arguments as add_credentials_arguments

    add_credentials_arguments(hosts)
    hosts.set_defaults(func=cmd_hosts)

    status = sub.add_parser("status", help="fleet summary: hosts, VM slots, CPU, memory, jobs by phase")
    status.add_argument("--namespace", "-n", help="count the jobs of this namespace only (default: all)")
    _view_arguments(status)
    status.set_defaults(func=cmd_status)

    jobs = sub.add_parser("jobs", help="list AnkaJobs, or follow their changes with --watch")
    scope = jobs.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", help="namespace (default: the kubeconfig context's)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="jobs of every namespace")
    jobs.add_argument("--phase", type=_phase_argument, help="only jobs in this phase (Pending, Running, …)")
    jobs.add_argument("--watch", "-w", action="store_true", help="then print a line per change until Ctrl-C")
    jobs.add_argument("--timeout", type=float, default=0.0, help="--watch stops after this many seconds")
    _view_arguments(jobs)
    jobs.set_defaults(func=cmd_jobs)

    explain = sub.add_parser("explain", help="a job's timeline, and why it waits or failed")
    explain.add_argument("job", help="the AnkaJob's name")
    explain.add_argument("--namespace", "-n", help="namespace (default: the kubeconfig context's)")
    _view_arguments(explain)
    explain.set_defaults(func=cmd_explain)

    agent = sub.add_parser(
        "agent", help="run the host agent on a Mac (`anklet agent [run]`), or install it as a launchd agent"
    )
    _agent_run_arguments(agent, None)
    agent.set_defaults(func=cmd_agent)
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="{run,install,uninstall}")
    run = agent_sub.add_parser("run", help="run the agent in the foreground (the default)")
    _agent_run_arguments(run, argparse.SUPPRESS)  # `anklet agent --name X run` keeps X
    run.set_defaults(func=cmd_agent)
    inst = agent_sub.add_parser("install", help="install as a launchd user agent (macOS), started at login")
    inst.add_argument("--config", help="the agent's config, copied to ~/.config/anklet/agent.yaml (0600)")
    inst.add_argument("--label", default="dev.anklet.agent", help="launchd label (default %(default)s)")
    inst.add_argument("--home", help="install under this home directory instead of ~ (tests, dry runs)")
    inst.add_argument("--no-load", action="store_true", help="write the files, do not call launchctl")
    inst.set_defaults(func=cmd_agent_install)
    uninst = agent_sub.add_parser("uninstall", help="stop the launchd agent and remove its plist")
    uninst.add_argument("--label", default="dev.anklet.agent", help="launchd label (default %(default)s)")
    uninst.add_argument("--home", help="the home directory it was installed under (default ~)")
    uninst.add_argument("--no-load", action="store_true", help="do not call launchctl")
    uninst.add_argument("--purge", action="store_true", help="also remove the config file and the logs")
    uninst.set_defaults(func=cmd_agent_uninstall)

    rcv = sub.add_parser(
        "receiver", help="run the GitHub webhook receiver (settings: ANKLET_RECEIVER_*, ANKLET_GITHUB_* env)"
    )
    rcv.add_argument("--config", help=CONFIG_HELP)
    rcv.add_argument("--host", help="listen address (default ANKLET_RECEIVER_HOST or 0.0.0.0)")
    rcv.add_argument("--port", type=int, help="listen port, 0 = any free one (default ANKLET_RECEIVER_PORT)")
    rcv.add_argument("--namespace", "-n", help="namespace for AnkaJobs (default ANKLET_RECEIVER_NAMESPACE)")
    rcv.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)")
    rcv.set_defaults(func=cmd_receiver)

    from anklet.config_cli import add_arguments as add_config_arguments

    add_config_arguments(sub)
    return parser


CONFIG_HELP = "YAML configuration file (default: $ANKLET_CONFIG); flags and environment win over it"


def _agent_run_arguments(parser: argparse.ArgumentParser, default: Any) -> None:
    """The flags of `anklet agent` and `anklet agent run` (SUPPRESS on the latter, so a flag
    given before `run` is not reset to its default by the subcommand)."""
    parser.add_argument("--config", default=default, help=CONFIG_HELP)
    parser.add_argument("--name", default=default, help="host name (default: agent.name, else the hostname)")
    parser.add_argument("--state-dir", default=default, help="agent state and lock files (default ~/.anklet)")
    parser.add_argument(
        "--arch", default=default, choices=["arm64", "amd64"], help="override the detected architecture"
    )
    parser.add_argument(
        "--log-file", default=default, help="also log to this file, rotated by size (agent.log_file)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=default,
        help="serve Prometheus /metrics on this port, 0: off (default ANKLET_AGENT_METRICS_PORT, else off)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.log_level or os.environ.get("LOG_LEVEL") or "INFO", args.log_format)
    except ValueError as exc:
        print(f"anklet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
