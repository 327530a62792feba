"""Anklet: CI jobs in ephemeral macOS VMs, scheduled through Kubernetes and Redis."""

__version__ = "0.1.0"
