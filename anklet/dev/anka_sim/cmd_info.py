"""``version``, ``license`` and the help text: what callers probe before trusting a host."""

from __future__ import annotations

from anklet.dev.anka_sim.args import Parsed
from anklet.dev.anka_sim.config import SimConfig
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.output import Reply, SimError

COMMANDS = (
    "list config show modify view run create start stop clone push pull mount unmount usb attach "
    "detach reboot delete registry cp license export import log suspend version"
)


def version_text(config: SimConfig) -> str:
    return f"{config.product} version {config.anka_version} (build {config.build})"


def help_text() -> str:
    return (
        "usage: anka [options] <command> [<args>]\n\n"
        "options:\n  -j, --machine-readable  JSON output\n  --version               print version\n\n"
        f"commands:\n  {COMMANDS}\n\n(simulated anka: anklet.dev.anka_sim)"
    )


def version(ctx: Ctx, _: Parsed) -> Reply:
    ctx.pause("version")
    config = ctx.config
    body = {
        "version": config.anka_version,
        "build": config.build,
        "product": config.product,
        "license": config.license_type,
        "expires": config.license_expires,
    }
    return Reply(body, human=version_text(config))


def license_cmd(ctx: Ctx, parsed: Parsed) -> Reply:
    sub = parsed.positionals[0] if parsed.positionals else "show"
    ctx.pause("license")
    config = ctx.config
    status = config.license_status
    fault = ctx.fault("license_invalid")
    if fault is not None:
        status = str(fault.get("status", "expired"))
    license_type = str(fault.get("license_type", config.license_type)) if fault else config.license_type
    if sub == "show":
        body = {
            "status": status,
            "license_type": license_type,
            "product": config.product,
            "expires": config.license_expires,
            "max_number_of_cores": 64,
            "fulfillment": "simulated",
        }
        return Reply(body)
    if sub == "validate":
        if status != "valid":
            raise SimError(f"license is not valid: {status}")
        return Reply({}, message="License is valid!")
    if sub in ("activate", "accept-eula"):
        return Reply({}, message="License activated" if sub == "activate" else "EULA accepted")
    raise SimError(f"license: unknown command {sub!r}")
