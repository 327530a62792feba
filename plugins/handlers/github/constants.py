"""Names shared by the GitHub receiver, the GitHub handler and the fake GitHub.

Labels and annotations on AnkaJobs are the receiver → controller channel for what GitHub said
(the receiver never writes status); keeping their names here keeps both sides in step.
"""

from __future__ import annotations

import re

# Job labels that make a workflow job ours (the Go Anklet's syntax, so workflows keep working).
TEMPLATE_LABEL_PREFIX = "anka-template:"
TAG_LABEL_PREFIX = "anka-template-tag:"

# Kubernetes labels on AnkaJobs created from GitHub jobs (for selection: kubectl get aj -l ...).
LABEL_JOB_ID = "anklet.dev/github-job-id"
LABEL_RUN_ID = "anklet.dev/github-run-id"
LABEL_REPOSITORY = "anklet.dev/github-repository"  # owner.repo (a label value cannot hold "/")

# Annotations the receiver writes from webhooks, forward only (queued < waiting < in_progress < completed).
ANNOTATION_STATUS = "anklet.dev/github-status"
ANNOTATION_CONCLUSION = "anklet.dev/github-conclusion"
ANNOTATION_RUNNER = "anklet.dev/github-runner-name"
ANNOTATION_DELIVERY = "anklet.dev/github-delivery"

STATUS_ORDER = {"queued": 0, "waiting": 1, "in_progress": 2, "completed": 3}

# Environment variable the actions runner reads its JIT config from inside the VM
# (the runner maps ACTIONS_RUNNER_INPUT_<ARG> to --<arg>), so it never sits on a command line.
JIT_CONFIG_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"

_NAME_SAFE = re.compile(r"[^a-z0-9-]")


def ankajob_name(job_id: int, run_attempt: int) -> str:
    """The AnkaJob's name for one attempt of one GitHub job: a redelivery maps to the same name."""
    return f"gh-{job_id}-{run_attempt}"


def label_value(text: str) -> str:
    """A Kubernetes label value (≤ 63 chars of [A-Za-z0-9._-]) from owner/repo."""
    return re.sub(r"[^A-Za-z0-9._-]", ".", text)[:63].strip("._-") or "x"
