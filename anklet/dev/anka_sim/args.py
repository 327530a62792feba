"""A small option parser with the quirks of the ``anka`` CLI.

``argparse`` cannot express them: options and positionals mix freely (``pull <uuid>
--check-download-size --tag T <url>``), short flags cluster (``cp -pRLf``), and ``run`` must
stop parsing at the vmid because everything after it is the guest's argv.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["flag", "value", "multi"]


class UsageError(Exception):
    """Bad command line; reported as an ERROR envelope like any other failure."""


@dataclass(frozen=True)
class Opt:
    """One option: its spellings, where it lands, and whether it takes a value."""

    names: tuple[str, ...]
    dest: str
    kind: Kind = "flag"


def flag(dest: str, *names: str) -> Opt:
    return Opt(names, dest, "flag")


def value(dest: str, *names: str) -> Opt:
    return Opt(names, dest, "value")


def multi(dest: str, *names: str) -> Opt:
    return Opt(names, dest, "multi")


@dataclass
class Parsed:
    """Parse result: option values by ``dest`` and the positionals in order."""

    options: dict[str, bool | str | list[str]] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)

    def flag(self, dest: str) -> bool:
        return bool(self.options.get(dest, False))

    def value(self, dest: str) -> str | None:
        raw = self.options.get(dest)
        return raw if isinstance(raw, str) else None

    def values(self, dest: str) -> list[str]:
        raw = self.options.get(dest)
        return list(raw) if isinstance(raw, list) else []


def parse(args: Sequence[str], opts: Iterable[Opt], *, stop_at_positional: bool = False) -> Parsed:
    """Parse ``args``; with ``stop_at_positional`` everything after the first positional is kept raw."""
    table = {name: opt for opt in opts for name in opt.names}
    result = Parsed()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            result.positionals.extend(args[i:])
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, inline = arg.partition("=")
            opt = _lookup(table, name)
            if opt.kind == "flag":
                if eq:
                    raise UsageError(f"option {name} takes no value")
                result.options[opt.dest] = True
            else:
                if not eq:
                    if i >= len(args):
                        raise UsageError(f"option {name} requires a value")
                    inline = args[i]
                    i += 1
                _store(result, opt, inline)
        elif arg.startswith("-") and len(arg) > 1:
            i = _parse_short_cluster(arg, args, i, table, result)
        else:
            result.positionals.append(arg)
            if stop_at_positional:
                result.positionals.extend(args[i:])
                break
    return result


def _parse_short_cluster(arg: str, args: Sequence[str], i: int, table: dict[str, Opt], result: Parsed) -> int:
    """``-pRL`` sets three flags; ``-tTAG`` or ``-t TAG`` gives a value to the last letter."""
    letters = arg[1:]
    for pos, letter in enumerate(letters):
        opt = _lookup(table, f"-{letter}")
        if opt.kind == "flag":
            result.options[opt.dest] = True
            continue
        rest = letters[pos + 1 :]
        if rest:
            _store(result, opt, rest)
        else:
            if i >= len(args):
                raise UsageError(f"option -{letter} requires a value")
            _store(result, opt, args[i])
            i += 1
        break
    return i


def _lookup(table: dict[str, Opt], name: str) -> Opt:
    try:
        return table[name]
    except KeyError:
        raise UsageError(f"no such option: {name}") from None


def _store(result: Parsed, opt: Opt, raw: str) -> None:
    if opt.kind == "multi":
        existing = result.options.setdefault(opt.dest, [])
        assert isinstance(existing, list)
        existing.append(raw)
    else:
        result.options[opt.dest] = raw
