"""JSON shapes of GitHub objects, field for field as GitHub's OpenAPI descriptions require.

Builders are pure functions of the state and the API base URL. Web URLs (``html_url``) point
at https://github.com like GitHub's; API URLs point at the fake so a client can follow them.
"""

from __future__ import annotations

import base64
from typing import Any

from anklet.dev.fake_github.errors import iso
from anklet.dev.fake_github.state import Account, Installation, Job, Repository, Run, Runner, Step

WEB = "https://github.com"
AVATARS = "https://avatars.githubusercontent.com"
APP_SLUG = "anklet-dev"
APP_PERMISSIONS = {
    "actions": "write",
    "administration": "write",
    "metadata": "read",
    "organization_hooks": "write",
    "organization_self_hosted_runners": "write",
    "repository_hooks": "write",
}
#: The identity that "triggers" every workflow run and sends every webhook.
SENDER = Account(login="anklet-dev-user", id=9_000_000, type="User")

_REPO_URLS = {
    "archive_url": "/{archive_format}{/ref}",
    "assignees_url": "/assignees{/user}",
    "blobs_url": "/git/blobs{/sha}",
    "branches_url": "/branches{/branch}",
    "collaborators_url": "/collaborators{/collaborator}",
    "comments_url": "/comments{/number}",
    "commits_url": "/commits{/sha}",
    "compare_url": "/compare/{base}...{head}",
    "contents_url": "/contents/{+path}",
    "contributors_url": "/contributors",
    "deployments_url": "/deployments",
    "downloads_url": "/downloads",
    "events_url": "/events",
    "forks_url": "/forks",
    "git_commits_url": "/git/commits{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "hooks_url": "/hooks",
    "issue_comment_url": "/issues/comments{/number}",
    "issue_events_url": "/issues/events{/number}",
    "issues_url": "/issues{/number}",
    "keys_url": "/keys{/key_id}",
    "labels_url": "/labels{/name}",
    "languages_url": "/languages",
    "merges_url": "/merges",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "pulls_url": "/pulls{/number}",
    "releases_url": "/releases{/id}",
    "stargazers_url": "/stargazers",
    "statuses_url": "/statuses/{sha}",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "tags_url": "/tags",
    "teams_url": "/teams",
    "trees_url": "/git/trees{/sha}",
}


def node_id(prefix: str, number: int) -> str:
    """Opaque GraphQL-style ids (``R_kgDO...``); only their stability matters."""
    return prefix + base64.b64encode(number.to_bytes(8, "big")).decode().rstrip("=")


def simple_user(api: str, account: Account) -> dict[str, Any]:
    login = account.login
    users = f"{api}/users/{login}"
    return {
        "login": login,
        "id": account.id,
        "node_id": node_id("O_kgDO" if account.type == "Organization" else "U_kgDO", account.id),
        "avatar_url": f"{AVATARS}/u/{account.id}?v=4",
        "gravatar_id": "",
        "url": users,
        "html_url": f"{WEB}/{login}",
        "followers_url": f"{users}/followers",
        "following_url": f"{users}/following{{/other_user}}",
        "gists_url": f"{users}/gists{{/gist_id}}",
        "starred_url": f"{users}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{users}/subscriptions",
        "organizations_url": f"{users}/orgs",
        "repos_url": f"{users}/repos",
        "events_url": f"{users}/events{{/privacy}}",
        "received_events_url": f"{users}/received_events",
        "type": account.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def organization(api: str, account: Account) -> dict[str, Any]:
    orgs = f"{api}/orgs/{account.login}"
    return {
        "login": account.login,
        "id": account.id,
        "node_id": node_id("O_kgDO", account.id),
        "url": orgs,
        "repos_url": f"{orgs}/repos",
        "events_url": f"{orgs}/events",
        "hooks_url": f"{orgs}/hooks",
        "issues_url": f"{orgs}/issues",
        "members_url": f"{orgs}/members{{/member}}",
        "public_members_url": f"{orgs}/public_members{{/member}}",
        "avatar_url": f"{AVATARS}/u/{account.id}?v=4",
        "description": None,
    }


def repository(api: str, repo: Repository, owner: Account) -> dict[str, Any]:
    """A repository object that satisfies both the REST "Minimal Repository" and the webhook
    "repository" schemas (the latter requires more fields)."""
    url = f"{api}/repos/{repo.full_name}"
    created = iso(repo.created_at)
    out: dict[str, Any] = {
        "id": repo.id,
        "node_id": node_id("R_kgDO", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": True,
        "owner": simple_user(api, owner),
        "html_url": f"{WEB}/{repo.full_name}",
        "description": None,
        "fork": False,
        "url": url,
    }
    out.update({key: url + suffix for key, suffix in _REPO_URLS.items()})
    out.update(
        {
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "clone_url": f"{WEB}/{repo.full_name}.git",
            "svn_url": f"{WEB}/{repo.full_name}",
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "license": None,
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 0,
            "default_branch": "main",
            "open_issues_count": 0,
            "open_issues": 0,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private",
            "pushed_at": created,
            "created_at": created,
            "updated_at": created,
            "allow_forking": False,
            "web_commit_signoff_required": False,
        }
    )
    return out


def steps(items: list[Step]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "status": s.status,
            "conclusion": s.conclusion,
            "number": s.number,
            "started_at": iso(s.started_at),
            "completed_at": iso(s.completed_at),
        }
        for s in items
    ]


def job(api: str, j: Job) -> dict[str, Any]:
    """The workflow job object, identical in ``GET .../actions/jobs/{id}`` and webhooks."""
    repo_api = f"{api}/repos/{j.repo.full_name}"
    return {
        "id": j.id,
        "run_id": j.run_id,
        "run_url": f"{repo_api}/actions/runs/{j.run_id}",
        "run_attempt": j.run_attempt,
        "node_id": node_id("CR_kwDO", j.id),
        "head_sha": j.head_sha,
        "head_branch": j.head_branch,
        "url": f"{repo_api}/actions/jobs/{j.id}",
        "html_url": f"{WEB}/{j.repo.full_name}/actions/runs/{j.run_id}/job/{j.id}",
        "status": j.status,
        "conclusion": j.conclusion,
        "created_at": iso(j.created_at),
        "started_at": iso(j.started_at or j.created_at),
        "completed_at": iso(j.completed_at),
        "name": j.name,
        "steps": steps(j.steps),
        "check_run_url": f"{repo_api}/check-runs/{j.id}",
        "labels": list(j.labels),
        "runner_id": j.runner_id,
        "runner_name": j.runner_name,
        "runner_group_id": j.runner_group_id,
        "runner_group_name": j.runner_group_name,
        "workflow_name": j.workflow_name,
    }


def run(api: str, r: Run, owner: Account, status: str, conclusion: str | None) -> dict[str, Any]:
    repo_api = f"{api}/repos/{r.repo.full_name}"
    run_api = f"{repo_api}/actions/runs/{r.id}"
    repository_obj = repository(api, r.repo, owner)
    actor = simple_user(api, SENDER)
    return {
        "id": r.id,
        "name": r.workflow_name,
        "display_title": r.workflow_name,
        "node_id": node_id("WFR_kwLO", r.id),
        "check_suite_id": r.id + 1,
        "check_suite_node_id": node_id("CS_kwDO", r.id + 1),
        "head_branch": r.head_branch,
        "head_sha": r.head_sha,
        "path": ".github/workflows/ci.yml",
        "run_number": r.run_number,
        "run_attempt": r.run_attempt,
        "referenced_workflows": [],
        "event": "push",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": r.workflow_id,
        "url": run_api,
        "html_url": f"{WEB}/{r.repo.full_name}/actions/runs/{r.id}",
        "pull_requests": [],
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "actor": actor,
        "triggering_actor": actor,
        "run_started_at": iso(r.created_at),
        "jobs_url": f"{run_api}/jobs",
        "logs_url": f"{run_api}/logs",
        "check_suite_url": f"{repo_api}/check-suites/{r.id + 1}",
        "artifacts_url": f"{run_api}/artifacts",
        "cancel_url": f"{run_api}/cancel",
        "rerun_url": f"{run_api}/rerun",
        "previous_attempt_url": None,
        "workflow_url": f"{repo_api}/actions/workflows/{r.workflow_id}",
        "head_commit": {
            "id": r.head_sha,
            "tree_id": r.head_sha[::-1],
            "message": "Simulated commit",
            "timestamp": iso(r.created_at),
            "author": {"name": SENDER.login, "email": f"{SENDER.login}@example.com"},
            "committer": {"name": SENDER.login, "email": f"{SENDER.login}@example.com"},
        },
        "repository": repository_obj,
        "head_repository": repository_obj,
        "head_repository_id": r.repo.id,
    }


def runner(rn: Runner, *, online: bool) -> dict[str, Any]:
    labels = [
        {"id": 1 + i, "name": label, "type": "read-only" if i == 0 else "custom"}
        for i, label in enumerate(rn.labels)
    ]
    return {
        "id": rn.id,
        "name": rn.name,
        "os": rn.os,
        "status": "online" if online else "offline",
        "busy": rn.job_id is not None and online,
        "ephemeral": True,
        "runner_group_id": rn.group_id,
        "labels": labels,
        "version": rn.version,
    }


def installation(api: str, inst: Installation, app_id: int) -> dict[str, Any]:
    account = inst.account
    if inst.target_type == "Enterprise":
        account_obj: dict[str, Any] = {
            "id": account.id,
            "node_id": node_id("E_kgDO", account.id),
            "name": account.login,
            "slug": account.login.lower(),
            "html_url": f"{WEB}/enterprises/{account.login}",
            "website_url": None,
            "description": None,
            "avatar_url": f"{AVATARS}/b/{account.id}?v=4",
            "created_at": iso(inst.created_at),
            "updated_at": iso(inst.created_at),
        }
    else:
        # GitHub's description combines "Simple User" and "Enterprise" with allOf here, so an
        # account carries the enterprise fields too (name, slug, timestamps).
        account_obj = {
            **simple_user(api, account),
            "name": account.login,
            "slug": account.login.lower(),
            "description": None,
            "website_url": None,
            "created_at": iso(inst.created_at),
            "updated_at": iso(inst.created_at),
        }
    return {
        "id": inst.id,
        "client_id": f"Iv23li{app_id:010d}",
        "account": account_obj,
        "repository_selection": "all",
        "access_tokens_url": f"{api}/app/installations/{inst.id}/access_tokens",
        "repositories_url": f"{api}/installation/repositories",
        "html_url": f"{WEB}/organizations/{account.login}/settings/installations/{inst.id}",
        "app_id": app_id,
        "app_slug": APP_SLUG,
        "target_id": account.id,
        "target_type": inst.target_type,
        "permissions": dict(APP_PERMISSIONS),
        "events": ["workflow_job"],
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.created_at),
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def workflow_job_event(
    api: str, action: str, j: Job, owner: Account, inst: Installation | None
) -> dict[str, Any]:
    """A ``workflow_job`` webhook payload (webhooks-workflow-job-openapi.json)."""
    payload: dict[str, Any] = {
        "action": action,
        "workflow_job": job(api, j),
        "repository": repository(api, j.repo, owner),
        "sender": simple_user(api, SENDER),
    }
    if owner.type == "Organization":
        payload["organization"] = organization(api, owner)
    if inst is not None:
        payload["installation"] = {
            "id": inst.id,
            "node_id": node_id("MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u", inst.id),
        }
    return payload


def ping_event(api: str, hook_id: int, url: str, created_at: float) -> dict[str, Any]:
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {
            "type": "Repository",
            "id": hook_id,
            "name": "web",
            "active": True,
            "events": ["workflow_job"],
            "config": {"content_type": "json", "insecure_ssl": "0", "url": url},
            "updated_at": iso(created_at),
            "created_at": iso(created_at),
            "url": f"{api}/hooks/{hook_id}",
            "test_url": f"{api}/hooks/{hook_id}/test",
            "ping_url": f"{api}/hooks/{hook_id}/pings",
            "deliveries_url": f"{api}/hooks/{hook_id}/deliveries",
            "last_response": {"code": None, "status": "unused", "message": None},
        },
        "sender": simple_user(api, SENDER),
    }
