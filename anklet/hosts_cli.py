"""`anklet hosts …`: list, cordon, uncordon and drain Macs through their AnkaHost objects.

Works against any cluster (kubeconfig or in-cluster) and the dev stack alike. The listing has
the columns of `kubectl get ah` (`-o wide` adds the wide ones) plus the templates count; a drain
cordons the host and then follows its AnkaHost with a watch until no VM is left, showing the jobs
still there: updated in place on a terminal, one line per change otherwise (logs, CI).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

from anklet import host_views, kubeapi, tables

HostsError = kubeapi.ApiError
client = kubeapi.client
_HOSTS = kubeapi.HOSTS_PATH


def list_hosts(
    http: httpx.Client,
    out: TextIO = sys.stdout,
    *,
    output: str = "table",
    color: bool | None = None,
    now: datetime | None = None,
) -> int:
    """The fleet as a table (`output` "table" or "wide"; colored on a terminal unless NO_COLOR)
    or as JSON/YAML records."""
    now = now or datetime.now(UTC)
    if color is None:
        color = tables.color_enabled(out, os.environ)
    items, _ = kubeapi.list_objects(http, _HOSTS, "listing AnkaHosts")
    if output in ("json", "yaml"):
        records = [host_views.host_record(h, now) for h in sorted(items, key=lambda h: h["metadata"]["name"])]
        out.write(tables.dump({"items": records}, output))
        return 0
    columns = host_views.host_columns(wide=output == "wide")
    out.write(
        tables.render(
            host_views.host_headers(columns), host_views.host_rows(items, columns, now), color=color
        )
    )
    return 0


def set_cordon(http: httpx.Client, name: str, cordoned: bool, out: TextIO = sys.stdout) -> int:
    kubeapi.request(
        http,
        "PATCH",
        f"{_HOSTS}/{name}",
        f"ankahost/{name}",
        json={"spec": {"unschedulable": cordoned}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    print(f"ankahost/{name} {'cordoned' if cordoned else 'uncordoned'}", file=out)
    return 0


class _Progress:
    """Prints drain progress: rewriting one line on a terminal, a line per change elsewhere."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty = out, tty
        self.last: host_views.DrainProgress | None = None
        self.open_line = False

    def show(self, progress: host_views.DrainProgress) -> None:
        if progress == self.last:
            return
        self.last = progress
        if progress.done:
            self.finish(progress.line())
        elif self.tty:
            self.out.write("\r\x1b[K" + progress.line())
            self.out.flush()
            self.open_line = True
        else:
            print(progress.line(), file=self.out, flush=True)

    def end_line(self) -> None:
        if self.open_line:
            self.out.write("\n")
            self.out.flush()
            self.open_line = False

    def finish(self, line: str) -> None:
        self.end_line()
        print(line, file=self.out, flush=True)


def drain(
    http: httpx.Client,
    name: str,
    *,
    timeout: float,
    out: TextIO = sys.stdout,
    tty: bool | None = None,
) -> int:
    """Cordon, then follow the host until its last VM is gone (or the timeout passes, or Ctrl-C:
    the host stays cordoned either way, and the exit code is 1 unless it drained)."""
    set_cordon(http, name, True, out)
    progress = _Progress(out, out.isatty() if tty is None else tty)
    deadline = time.monotonic() + timeout
    what = f"ankahost/{name}"
    selector = {"fieldSelector": f"metadata.name={name}"}
    items, rv = kubeapi.list_objects(http, _HOSTS, what, selector)
    if not items:
        raise HostsError(f"{what}: not found")
    host: dict[str, Any] = items[0]
    try:
        progress.show(host_views.drain_progress(host))
        if progress.last is not None and progress.last.done:
            return 0
        changes = kubeapi.follow(http, _HOSTS, what, resource_version=rv, params=selector, deadline=deadline)
        for change in changes:
            latest = change.items[0] if change.type == "RELISTED" and change.items else change.object
            if change.type == "DELETED" or not latest:
                progress.finish(f"{what} was deleted")
                return 1
            host = latest
            progress.show(host_views.drain_progress(host))
            if progress.last is not None and progress.last.done:
                return 0
    except KeyboardInterrupt:
        vms = host_views.drain_progress(host).vms
        progress.finish(f"{what}: stopped following with {vms} VM(s) left; it stays cordoned")
        return 1
    finally:
        progress.end_line()  # an error must not leave the cursor mid-line
    vms = host_views.drain_progress(host).vms
    progress.finish(f"{what}: still {vms} VM(s) after {timeout:.0f} s")
    return 1
