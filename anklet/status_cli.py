"""`anklet status`, `anklet jobs` and `anklet explain`: fetch from the API, hand the objects to
the pure views (`status_views`, `explain`), print.

Each `run_*` takes an open client and the output stream, so the e2e tests drive the real command
line while the views themselves are unit-tested without any I/O. The `*_command` functions are
what `anklet.cli` registers: they resolve the kubeconfig and namespace, and turn API problems
into one error line and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import httpx
import yaml

from anklet import explain, kubeapi, status_views, tables

log = logging.getLogger("anklet")

EXIT_OK = 0
EXIT_FAILED = 1
# Columns of `anklet jobs --watch` are sized before later jobs arrive: leave room for the usual.
WATCH_MIN_WIDTHS = (9, 20, 12, 8, 20, 8, 5)


def run_status(
    http: httpx.Client, *, namespace: str | None, output: str, out: TextIO, color: bool, now: datetime
) -> int:
    hosts, _ = kubeapi.list_objects(http, kubeapi.HOSTS_PATH, "listing AnkaHosts")
    jobs, _ = kubeapi.list_objects(http, kubeapi.jobs_path(namespace), "listing AnkaJobs")
    summary = status_views.fleet_summary(hosts, jobs, namespace=namespace)
    if output in ("json", "yaml"):
        out.write(tables.dump(summary.record(now), output))
    else:
        out.write(tables.render(None, summary.rows(now), color=color))
    return EXIT_OK


def run_jobs(
    http: httpx.Client,
    *,
    namespace: str | None,
    phase: str | None,
    output: str,
    out: TextIO,
    color: bool,
    now: datetime,
    err: TextIO = sys.stderr,
) -> int:
    items, _ = kubeapi.list_objects(http, kubeapi.jobs_path(namespace), "listing AnkaJobs")
    rows = status_views.job_rows(items, phase=phase)
    if output in ("json", "yaml"):
        out.write(tables.dump({"items": [r.record(now) for r in rows]}, output))
    elif not rows:
        where = f"in namespace {namespace}" if namespace else "in any namespace"
        print(f"No AnkaJobs{f' in phase {phase}' if phase else ''} {where}.", file=err)
    else:
        out.write(tables.render(status_views.JOB_HEADERS, [r.cells(now) for r in rows], color=color))
    return EXIT_OK


def run_watch(
    http: httpx.Client,
    *,
    namespace: str | None,
    phase: str | None,
    output: str,
    out: TextIO,
    color: bool,
    deadline: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """The current jobs, then a line per visible change until the deadline or Ctrl-C.

    Table lines are aligned under the first header; `-o json` prints one JSON object per line
    (`{"type": …, "job": …}`), `-o yaml` one document per change.
    """
    path, what = kubeapi.jobs_path(namespace), "watching AnkaJobs"
    items, rv = kubeapi.list_objects(http, path, what)
    state = status_views.JobWatch(phase)
    now = clock()
    seeded = [status_views.WatchLine("ADDED", row) for row in state.seed(items)]
    widths = tables.widths(status_views.JOB_HEADERS, [line.cells(now) for line in seeded], WATCH_MIN_WIDTHS)

    def emit(line: status_views.WatchLine) -> None:
        if output == "json":
            out.write(json.dumps(line.record(clock())) + "\n")
        elif output == "yaml":
            out.write("---\n" + yaml.safe_dump(line.record(clock()), sort_keys=False))
        else:
            out.write(tables.render_row(line.cells(clock()), widths, color) + "\n")
        out.flush()

    if output not in ("json", "yaml"):
        out.write(tables.render_row(status_views.JOB_HEADERS, widths, False) + "\n")
    for line in seeded:
        emit(line)
    for change in kubeapi.follow(http, path, what, resource_version=rv, deadline=deadline):
        if change.type == "RELISTED":
            lines = state.resync(change.items)
        else:
            applied = state.apply(change.type, change.object)
            lines = [applied] if applied is not None else []
        for line in lines:
            emit(line)
    return EXIT_OK


def run_explain(
    http: httpx.Client, *, namespace: str, name: str, output: str, out: TextIO, color: bool, now: datetime
) -> int:
    job = kubeapi.request(
        http, "GET", f"{kubeapi.jobs_path(namespace)}/{name}", f"ankajob {namespace}/{name}"
    )
    try:
        events = kubeapi.job_events(http, namespace, name)
    except kubeapi.ApiError as exc:  # e.g. RBAC without events: explain what the object says
        log.warning("no Events in the timeline: %s", exc)
        events = []
    explanation = explain.explain(job, events, now)
    if output in ("json", "yaml"):
        out.write(tables.dump(explanation.record(now), output))
    else:
        out.write(explain.render_explanation(explanation, now, color=color))
    return EXIT_OK


# ----- what anklet.cli registers ------------------------------------------------------------


def _call(args: argparse.Namespace, body: Callable[[httpx.Client, bool], int]) -> int:
    """Open the client, run, and map failures to one error line; Ctrl-C is a clean stop."""
    color = args.output == "table" and tables.color_enabled(sys.stdout, os.environ)
    try:
        with kubeapi.client(args.kubeconfig) as http:
            return body(http, color)
    except kubeapi.ApiError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `anklet jobs | head`: the reader is done, so are we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def status_command(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda http, color: run_status(
            http,
            namespace=args.namespace,
            output=args.output,
            out=sys.stdout,
            color=color,
            now=datetime.now(UTC),
        ),
    )


def jobs_command(args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else args.namespace or kubeapi.default_namespace(args.kubeconfig)
    if args.watch:
        deadline = time.monotonic() + args.timeout if args.timeout else None
        return _call(
            args,
            lambda http, color: run_watch(
                http,
                namespace=namespace,
                phase=args.phase,
                output=args.output,
                out=sys.stdout,
                color=color,
                deadline=deadline,
            ),
        )
    return _call(
        args,
        lambda http, color: run_jobs(
            http,
            namespace=namespace,
            phase=args.phase,
            output=args.output,
            out=sys.stdout,
            color=color,
            now=datetime.now(UTC),
        ),
    )


def explain_command(args: argparse.Namespace) -> int:
    namespace = args.namespace or kubeapi.default_namespace(args.kubeconfig)
    return _call(
        args,
        lambda http, color: run_explain(
            http,
            namespace=namespace,
            name=args.job,
            output=args.output,
            out=sys.stdout,
            color=color,
            now=datetime.now(UTC),
        ),
    )


def phase_argument(text: str) -> str:
    """argparse `type=` for --phase: case-insensitive, a clear error listing the phases."""
    try:
        return status_views.normalize_phase(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
