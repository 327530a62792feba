"""Pieces of the emulated Kubernetes API server; the public entry point is `anklet.dev.kube_emulator`.

One job per module: `errors` (Status bodies), `selectors` (label/field selectors), `table`
(server-side printing), `resources` (what is served, discovery), `schema` (CRD pruning, defaults,
validation), `goregex` (a CRD `pattern` as Go's regexp reads it), `openapi` (what kubectl
validates and explains with), `patches` (merge, JSON patch, apply), `store` (objects, resource
versions, watch history, write semantics) and `routing` (HTTP on top of kmock). For tests of the
deployment: `audit` (who asked for what, in RBAC's terms), `rbac` (what the manifests' Roles
allow) and `podenv` (a container's env as the kubelet builds it).
"""
