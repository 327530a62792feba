"""A thin async adapter for the few Kubernetes writes the controller makes outside kopf handlers.

kopf owns watching and handler bookkeeping; the reconciler (one serial writer) patches AnkaJob
status, posts Events and deletes expired jobs through this client. Credentials come from the
official client's loaders (in-cluster service account or kubeconfig), requests go over httpx.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from anklet import models


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"kubernetes API answered {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate, resolved once for kopf and for us."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    insecure: bool = False
    cert_path: str | None = None
    key_path: str | None = None


def load_connection(kubeconfig: str | None = None) -> Connection:
    """Service-account credentials in a pod, else the kubeconfig (argument or $KUBECONFIG)."""
    from kubernetes import config as kconfig
    from kubernetes.client import Configuration

    cfg = Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        kconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg, persist_config=False
        )
    header = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization") or ""
    token = header.split(" ", 1)[-1] if header else None
    return Connection(
        server=cfg.host,
        token=token,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        cert_path=cfg.cert_file,
        key_path=cfg.key_file,
    )


class KubeClient:
    """Status patches, deletes and Events for AnkaJobs."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._http = client

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
        conn = load_connection(kubeconfig)
        headers = {"Accept": "application/json"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        verify: ssl.SSLContext | bool = False
        if conn.server.startswith("https"):
            ctx = ssl.create_default_context(cafile=conn.ca_path)
            if conn.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if conn.cert_path:
                ctx.load_cert_chain(conn.cert_path, conn.key_path)
            verify = ctx
        http = httpx.AsyncClient(base_url=conn.server, headers=headers, verify=verify, timeout=30.0)
        return cls(http)

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _path(namespace: str, name: str) -> str:
        return f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{namespace}/{models.PLURAL}/{name}"

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch `.status`; returns the updated object, None when the object is gone."""
        response = await self._http.patch(
            self._path(namespace, name) + "/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text[:500])
        body: dict[str, Any] = response.json()
        return body

    @staticmethod
    def _host_path(name: str = "") -> str:
        base = f"/apis/{models.GROUP}/{models.VERSION}/{models.HOST_PLURAL}"
        return f"{base}/{name}" if name else base

    async def create_host(self, name: str) -> dict[str, Any] | None:
        """Create the AnkaHost for a newly registered Mac; None when it already exists."""
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.HOST_KIND,
            "metadata": {"name": name, "labels": {"anklet.dev/host": name}},
            "spec": {},
        }
        response = await self._http.post(self._host_path(), json=body)
        if response.status_code == 409:
            return None
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text[:500])
        created: dict[str, Any] = response.json()
        return created

    async def patch_host_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        response = await self._http.patch(
            self._host_path(name) + "/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text[:500])
        body: dict[str, Any] = response.json()
        return body

    async def host_event(
        self, name: str, uid: str, *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        await self._post_event(
            namespace="default",
            involved={"apiVersion": models.API_VERSION, "kind": models.HOST_KIND, "name": name, "uid": uid},
            name=name,
            reason=reason,
            message=message,
            type_=type_,
        )

    async def delete(self, namespace: str, name: str) -> None:
        response = await self._http.request(
            "DELETE", self._path(namespace, name), json={"propagationPolicy": "Background"}
        )
        if response.status_code not in (200, 202, 404):
            raise KubeError(response.status_code, response.text[:500])

    @staticmethod
    def _lease_path(namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A coordination.k8s.io/v1 Lease (leader election); None when there is none."""
        return await self._lease_call("GET", self._lease_path(namespace, name), None, absent=404)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST a Lease; None when one of that name exists already (another replica won)."""
        return await self._lease_call("POST", self._lease_path(namespace), body, absent=409)

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """PUT a Lease, conditional on the body's resourceVersion; None on 409 (someone wrote since)."""
        return await self._lease_call("PUT", self._lease_path(namespace, name), body, absent=409)

    async def _lease_call(
        self, method: str, path: str, body: dict[str, Any] | None, *, absent: int
    ) -> dict[str, Any] | None:
        response = await self._http.request(method, path, json=body)
        if response.status_code == absent:
            return None
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text[:500])
        result: dict[str, Any] = response.json()
        return result

    async def event(self, job: models.AnkaJob, *, reason: str, message: str, type_: str = "Normal") -> None:
        """Post a core/v1 Event about the job (best effort: an Event is never worth a retry loop)."""
        involved = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "name": job.metadata.name,
            "namespace": job.metadata.namespace,
            "uid": job.metadata.uid,
        }
        await self._post_event(
            namespace=job.metadata.namespace,
            involved=involved,
            name=job.metadata.name,
            reason=reason,
            message=message,
            type_=type_,
        )

    async def _post_event(
        self, *, namespace: str, involved: dict[str, str], name: str, reason: str, message: str, type_: str
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "anklet-controller"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._http.post(f"/api/v1/namespaces/{namespace}/events", json=body)
        except httpx.HTTPError:
            return
