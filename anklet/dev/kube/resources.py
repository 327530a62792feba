"""What the emulator serves: built-in resources, resources registered by CRDs, and API discovery.

kubectl and kopf find everything through discovery (`/api`, `/apis`, `/apis/{g}/{v}`): a resource
that is stored but not discoverable does not exist for them ("no matches for kind"). Creating a CRD
therefore registers its versions here, which is also where Table columns and schemas come from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from anklet.dev.kube.schema import pattern_causes
from anklet.dev.kube.table import AGE_COLUMN

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
CRD_KEY = "apiextensions.k8s.io/v1/customresourcedefinitions"
NAMESPACES_KEY = "v1/namespaces"


@dataclasses.dataclass(frozen=True, eq=False)
class ResourceDef:
    """One served group/version/plural with what discovery, Tables and validation need."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    printer_columns: tuple[Mapping[str, Any], ...] = (AGE_COLUMN,)
    schema: Mapping[str, Any] | None = None
    crd_name: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """`anklet.dev/v1alpha1/ankajobs` or `v1/namespaces`: the key of the public accessors."""
        return f"{self.api_version}/{self.plural}"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _column(name: str, path: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path}


def _builtin(api_version: str, plural: str, kind: str, *, namespaced: bool, **extra: Any) -> ResourceDef:
    group, _, version = api_version.rpartition("/")
    return ResourceDef(group, version, plural, kind, namespaced, kind.lower(), **extra)


BUILTINS = (
    _builtin(
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=frozenset({"status"}),
        printer_columns=(_column("Status", ".status.phase"), AGE_COLUMN),
    ),
    _builtin(
        "v1",
        "events",
        "Event",
        namespaced=True,
        short_names=("ev",),
        printer_columns=(
            _column("Last Seen", ".lastTimestamp", "date"),
            _column("Type", ".type"),
            _column("Reason", ".reason"),
            _column("Object", ".involvedObject.name"),
            _column("Message", ".message"),
        ),
    ),
    _builtin(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=frozenset({"status"}),
        printer_columns=(_column("Created At", ".metadata.creationTimestamp"),),
    ),
    _builtin("coordination.k8s.io/v1", "leases", "Lease", namespaced=True),
    _builtin("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    _builtin("kopf.dev/v1", "kopfpeerings", "KopfPeering", namespaced=True),
)


def crd_causes(crd: Mapping[str, Any]) -> list[dict[str, str]]:
    """The few structural checks without which a CRD cannot be served (422 causes)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    required = {
        "spec.group": spec.get("group"),
        "spec.names.plural": names.get("plural"),
        "spec.names.kind": names.get("kind"),
        "spec.versions": spec.get("versions"),
    }
    causes = [
        {"reason": "FieldValueRequired", "message": "Required value", "field": field}
        for field, value in required.items()
        if not value
    ]
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not causes and crd.get("metadata", {}).get("name") != expected:
        name = crd.get("metadata", {}).get("name")
        message = f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'
        causes.append({"reason": "FieldValueInvalid", "message": message, "field": "metadata.name"})
    versions = spec.get("versions")
    for index, version in enumerate(versions if isinstance(versions, list) else []):
        schema = (version.get("schema") or {}) if isinstance(version, Mapping) else {}
        if isinstance(schema, Mapping):  # a pattern Go cannot compile: the apiserver refuses the CRD
            field = f"spec.versions[{index}].schema.openAPIV3Schema"
            causes += pattern_causes(schema.get("openAPIV3Schema"), field)
    return causes


def from_crd(crd: Mapping[str, Any]) -> list[ResourceDef]:
    """One ResourceDef per served version of a (valid) CRD."""
    spec, names = crd["spec"], crd["spec"]["names"]
    return [
        ResourceDef(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=frozenset(version.get("subresources") or {}) & {"status"},
            printer_columns=tuple(version.get("additionalPrinterColumns") or (AGE_COLUMN,)),
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            crd_name=crd["metadata"]["name"],
        )
        for version in spec["versions"]
        if version.get("served", True)
    ]


def crd_status(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The status a healthy apiserver reports once names are accepted (tools wait for Established)."""
    spec, names = crd["spec"], crd["spec"]["names"]
    since = crd["metadata"].get("creationTimestamp")
    accepted = {"singular": names["kind"].lower(), "listKind": f"{names['kind']}List", **names}
    return {
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": since,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": since,
            },
        ],
        "acceptedNames": accepted,
        "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
    }


class Registry:
    """All served resources, keyed by `group/version/plural` (`v1/plural` for the core group)."""

    def __init__(self) -> None:
        self._defs: dict[str, ResourceDef] = {res.key: res for res in BUILTINS}

    def __iter__(self) -> Iterator[ResourceDef]:
        return iter(list(self._defs.values()))

    def find(self, group: str, version: str, plural: str) -> ResourceDef | None:
        return self._defs.get(f"{group}/{version}/{plural}" if group else f"{version}/{plural}")

    def get(self, key: str) -> ResourceDef | None:
        return self._defs.get(key)

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """(Re-)register a CRD's versions; replaces what an earlier revision of it registered."""
        self.unregister_crd(crd["metadata"]["name"])
        for res in from_crd(crd):
            self._defs[res.key] = res

    def unregister_crd(self, crd_name: str) -> list[ResourceDef]:
        gone = [res for res in self._defs.values() if res.crd_name == crd_name]
        for res in gone:
            del self._defs[res.key]
        return gone

    def group_versions(self) -> dict[str, list[str]]:
        """Non-core groups with their versions, in registration order (the first is preferred)."""
        groups: dict[str, list[str]] = {}
        for res in self._defs.values():
            versions = groups.setdefault(res.group, [])
            if res.version not in versions:
                versions.append(res.version)
        groups.pop("", None)
        return groups

    # Discovery documents (legacy, non-aggregated: kubectl 1.32 and kopf fall back to them).

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.group_versions().get(group)
        if not versions:
            return None
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for name in self.group_versions():
            group = self.api_group(name)
            assert group is not None
            groups.append({key: value for key, value in group.items() if key not in ("kind", "apiVersion")})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        served = [res for res in self._defs.values() if (res.group, res.version) == (group, version)]
        if not served:
            return None
        entries: list[dict[str, Any]] = []
        for res in served:
            common = {"namespaced": res.namespaced, "kind": res.kind}
            entries.append(
                {
                    "name": res.plural,
                    "singularName": res.singular,
                    **common,
                    "verbs": VERBS,
                    "shortNames": list(res.short_names),
                    "categories": list(res.categories),
                }
            )
            entries.extend(
                {
                    "name": f"{res.plural}/{sub}",
                    "singularName": "",
                    **common,
                    "verbs": ["get", "patch", "update"],
                }
                for sub in sorted(res.subresources)
            )
        group_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": entries,
        }
