"""Where runners and hooks live on GitHub: a repository, an organisation or an enterprise.

The same runner and hook calls exist under `/repos/{owner}/{repo}`, `/orgs/{org}` and (runners
only) `/enterprises/{enterprise}`; a Scope renders that prefix once, with each segment escaped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import quote


class ScopeKind(enum.StrEnum):
    REPO = "repo"
    ORG = "org"
    ENTERPRISE = "enterprise"


def _seg(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    owner: str = ""
    repo: str = ""
    enterprise: str = ""

    @classmethod
    def repository(cls, owner: str, repo: str) -> Scope:
        return cls(ScopeKind.REPO, owner=owner, repo=repo)

    @classmethod
    def organization(cls, org: str) -> Scope:
        return cls(ScopeKind.ORG, owner=org)

    @classmethod
    def for_enterprise(cls, enterprise: str) -> Scope:
        return cls(ScopeKind.ENTERPRISE, enterprise=enterprise)

    @property
    def prefix(self) -> str:
        """`/repos/o/r`, `/orgs/o` or `/enterprises/e`."""
        if self.kind is ScopeKind.REPO:
            return f"/repos/{_seg(self.owner)}/{_seg(self.repo)}"
        if self.kind is ScopeKind.ORG:
            return f"/orgs/{_seg(self.owner)}"
        return f"/enterprises/{_seg(self.enterprise)}"

    def __str__(self) -> str:
        if self.kind is ScopeKind.REPO:
            return f"{self.owner}/{self.repo}"
        return self.owner if self.kind is ScopeKind.ORG else f"enterprise {self.enterprise}"
