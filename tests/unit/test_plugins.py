from __future__ import annotations

import pytest

from anklet import plugins
from anklet.models import AnkaJob


def test_script_handler_is_found_through_its_entry_point() -> None:
    assert "script" in plugins.handler_plugins()


def test_unknown_handler_names_the_installed_ones() -> None:
    with pytest.raises(plugins.UnknownPlugin, match=r"installed: .*script"):
        plugins.handler("nope")


def test_script_handler_builds_the_workload_and_validates() -> None:
    job = AnkaJob.model_validate(
        {
            "metadata": {"name": "j", "uid": "u"},
            "spec": {
                "template": "t",
                "handler": "script",
                "timeoutSeconds": 60,
                "script": {"run": "echo hi", "env": {"A": "1"}},
            },
        }
    )
    workload = plugins.handler("script").workload(job)
    assert (workload.script, workload.env, workload.timeout_seconds) == ("echo hi", {"A": "1"}, 60)
    bare = job.spec.model_copy(update={"script": None})
    with pytest.raises(plugins.InvalidJob, match=r"spec\.script is required"):
        plugins.handler("script").validate(bare)
