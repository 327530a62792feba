"""A faithful stand-in for Veertu's ``anka`` CLI, for tests and the local dev stack.

It has the real CLI surface (``-j`` envelopes, exit codes, VM states, the 2-VM limit, a
registry, disk, latencies) and fault injection, per ``shared/reference/anka-cli.md`` §6.
Run it as the ``anka-sim`` console script, or install an ``anka`` shim with
:func:`install_shim`. Tests drive faults and read the call log through :mod:`.control`.

Layout: ``cli`` (entry, dispatch, generic faults), ``args`` (option parsing), ``output``
(envelope), ``config``/``paths``/``state`` (persistent host), ``faults``, ``calllog``,
``registry``/``pulls`` (catalogue, pull slot, disk), ``sandbox`` (the guest filesystem),
``cmd_*`` (one module per command family), ``control`` (test helpers), ``shim``.
"""

from __future__ import annotations

from anklet.dev.anka_sim.shim import install_shim

__all__ = ["install_shim"]
