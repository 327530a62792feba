"""The `script` handler: run `spec.script.run` inside the VM and report its exit code."""

from __future__ import annotations

from anklet.models import AnkaJob, AnkaJobSpec
from anklet.plugins import Handler, InvalidJob
from anklet.wire import Workload


class ScriptHandler(Handler):
    """Exit code 0 → Succeeded; anything else → Failed with the exit code and output tail."""

    name = "script"

    def validate(self, spec: AnkaJobSpec) -> None:
        if spec.script is None:
            raise InvalidJob(
                "spec.script is required for handler 'script' (spec.script.run: the script to run)"
            )

    def workload(self, job: AnkaJob) -> Workload:
        script = job.spec.script
        if script is None:
            raise InvalidJob("spec.script is required for handler 'script'")
        return Workload(script=script.run, env=dict(script.env), timeout_seconds=job.spec.timeout_seconds)
