"""anklet.dev.kube.audit: requests become the attributes RBAC decides on, as in kube-apiserver."""

from __future__ import annotations

import pytest

from anklet.dev.kube.audit import ANONYMOUS, UNKNOWN, Access, RequestRecorder, request_attributes

JOBS = "/apis/anklet.dev/v1alpha1/namespaces/team/ankajobs"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        pytest.param("GET", JOBS, {}, ("list", "anklet.dev", "ankajobs", "", "team", ""), id="list"),
        pytest.param(
            "GET", JOBS, {"watch": "true"}, ("watch", "anklet.dev", "ankajobs", "", "team", ""), id="watch"
        ),
        pytest.param(
            "GET",
            "/apis/anklet.dev/v1alpha1/ankajobs",
            {"watch": "1"},
            ("watch", "anklet.dev", "ankajobs", "", "", ""),
            id="watch-all-namespaces",
        ),
        pytest.param("GET", f"{JOBS}/x", {}, ("get", "anklet.dev", "ankajobs", "", "team", "x"), id="get"),
        pytest.param("POST", JOBS, {}, ("create", "anklet.dev", "ankajobs", "", "team", ""), id="create"),
        pytest.param(
            "PUT", f"{JOBS}/x", {}, ("update", "anklet.dev", "ankajobs", "", "team", "x"), id="update"
        ),
        pytest.param(
            "PATCH",
            f"{JOBS}/x/status",
            {},
            ("patch", "anklet.dev", "ankajobs", "status", "team", "x"),
            id="status",
        ),
        pytest.param(
            "DELETE", f"{JOBS}/x", {}, ("delete", "anklet.dev", "ankajobs", "", "team", "x"), id="delete"
        ),
        pytest.param(
            "DELETE",
            JOBS,
            {},
            ("deletecollection", "anklet.dev", "ankajobs", "", "team", ""),
            id="deletecollection",
        ),
        pytest.param(
            "POST", "/api/v1/namespaces/team/events", {}, ("create", "", "events", "", "team", ""), id="core"
        ),
        pytest.param(
            "GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", ""), id="namespaces"
        ),
        pytest.param(
            "GET",
            "/api/v1/namespaces/team",
            {},
            ("get", "", "namespaces", "", "team", "team"),
            id="a-namespace",
        ),
        pytest.param(
            "PUT",
            "/api/v1/namespaces/team/finalize",
            {},
            ("update", "", "namespaces", "finalize", "team", "team"),
            id="namespace-subresource",
        ),
        pytest.param(
            "GET",
            "/api/v1/watch/namespaces/team/events",
            {},
            ("watch", "", "events", "", "team", ""),
            id="legacy-watch-prefix",
        ),
        pytest.param(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/s/leases",
            {"fieldSelector": "metadata.name=l"},
            ("list", "coordination.k8s.io", "leases", "", "s", "l"),
            id="list-one-name",
        ),
    ],
)
def test_resource_requests(
    method: str, path: str, query: dict[str, str], expected: tuple[str, str, str, str, str, str]
) -> None:
    access = request_attributes(method, path, query, "u")
    assert access.is_resource
    assert (
        access.verb,
        access.api_group,
        access.resource,
        access.subresource,
        access.namespace,
        access.name,
    ) == expected


@pytest.mark.parametrize("path", ["/apis", "/api", "/api/v1", "/apis/anklet.dev/v1alpha1", "/version", "/"])
def test_discovery_and_other_paths_are_non_resource(path: str) -> None:
    access = request_attributes("GET", path, {}, "u")
    assert not access.is_resource
    assert (access.verb, access.path) == ("get", path)


def test_users_come_from_minted_tokens() -> None:
    recorder = RequestRecorder()
    token = recorder.token_for("system:serviceaccount:ns:sa")
    recorder.record("GET", JOBS, {}, f"Bearer {token}")
    recorder.record("GET", JOBS, {}, None)
    recorder.record("GET", JOBS, {}, "Bearer forged")
    recorder.record("GET", JOBS, {}, f"Bearer {token}")
    users = {access.user: count for access, count in recorder.accesses().items()}
    assert users == {"system:serviceaccount:ns:sa": 2, ANONYMOUS: 1, UNKNOWN: 1}
    expected = Access(
        user="system:serviceaccount:ns:sa",
        verb="list",
        api_group="anklet.dev",
        resource="ankajobs",
        namespace="team",
    )
    assert list(recorder.accesses("system:serviceaccount:ns:sa")) == [expected]


def test_the_recorder_is_bounded() -> None:
    recorder = RequestRecorder(limit=2)
    for name in ("a", "b", "c", "a"):
        recorder.record("GET", f"{JOBS}/{name}", {}, None)
    assert len(recorder.accesses()) == 2 and recorder.dropped == 1
    recorder.clear()
    assert recorder.accesses() == {} and recorder.dropped == 0
