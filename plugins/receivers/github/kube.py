"""The three Kubernetes calls the receiver makes on AnkaJobs: get, create, patch annotations.

Built on `controller.kube.KubeClient` (same credential loading: in-cluster service account or
kubeconfig, requests over httpx). Each call reports the outcomes the receiver branches on —
absent, already exists, stale resourceVersion — as values; anything else raises KubeError so
the webhook is answered 5xx and GitHub's delivery stays visible as failed (and redeliverable).
"""

from __future__ import annotations

import enum
import json
from typing import Any

import httpx

from controller.kube import KubeClient, KubeError


class PatchResult(enum.Enum):
    OK = "ok"
    CONFLICT = "conflict"  # the object changed since we read it: read again
    GONE = "gone"  # deleted since we read it


def _failed(response: httpx.Response) -> KubeError:
    return KubeError(response.status_code, response.text[:300])


class AnkaJobStore(KubeClient):
    """AnkaJob reads and metadata writes for the webhook receiver."""

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> AnkaJobStore:
        """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
        return cls(KubeClient.from_environment(kubeconfig)._http)

    @staticmethod
    def _collection(namespace: str) -> str:
        return KubeClient._path(namespace, "").rstrip("/")

    async def _send(
        self, method: str, url: str, body: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """`body` is sent as ASCII-escaped JSON: a payload string GitHub's JSON can carry but UTF-8
        cannot (a lone surrogate like "\\ud800") must not crash the request (httpx's `json=` would)."""
        if body is not None:
            kwargs["content"] = json.dumps(body).encode("ascii")
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeError(0, f"{type(exc).__name__}: cannot reach the Kubernetes API") from exc

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._send("GET", self._path(namespace, name))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _failed(response)
        body: dict[str, Any] = response.json()
        return body

    async def create(self, namespace: str, body: dict[str, Any]) -> bool:
        """POST the object; False when one with that name already exists (409 AlreadyExists)."""
        response = await self._send("POST", self._collection(namespace), body)
        if response.status_code == 409:
            return False
        if response.status_code not in (200, 201):
            raise _failed(response)
        return True

    async def patch_annotations(
        self, namespace: str, name: str, annotations: dict[str, str], *, resource_version: str
    ) -> PatchResult:
        """Merge annotations, only if the object is still at `resource_version` (optimistic lock)."""
        patch = {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}
        response = await self._send(
            "PATCH",
            self._path(namespace, name),
            patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 409:
            return PatchResult.CONFLICT
        if response.status_code == 404:
            return PatchResult.GONE
        if response.status_code != 200:
            raise _failed(response)
        return PatchResult.OK
