"""Errors of the GitHub REST client, one class per outcome a caller may want to branch on.

Every error carries the HTTP method, the path (never the query, never a header) and the status,
so a log line names the call that failed without leaking credentials.
"""

from __future__ import annotations


class GitHubError(RuntimeError):
    """A GitHub API call failed; `status` is None when no response arrived (network error)."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = message
        where = f"{method} {path}"
        super().__init__(f"{where} -> {status}: {message}" if status is not None else f"{where}: {message}")


class AuthError(GitHubError):
    """401: the token (PAT or App installation token) or the App's JWT was rejected."""


class Forbidden(GitHubError):
    """403 that is not a rate limit: the token lacks a permission for this call."""


class NotFound(GitHubError):
    """404: the object does not exist, or the token may not see it (GitHub hides both alike)."""


class Conflict(GitHubError):
    """409: the request conflicts with the object's current state."""


class RunnerNameExists(Conflict):
    """409 on generate-jitconfig: a runner with this name exists, so an earlier attempt succeeded.

    GitHub does not hand out that runner's JIT config again: look the runner up with
    `find_runner`, delete it, and register again (or use a new name).
    """


class Unprocessable(GitHubError):
    """422: GitHub refused the request's content (validation failed)."""


class RunnerBusy(Unprocessable):
    """422 on a runner delete: the runner is running a job and cannot be deleted yet."""


class RateLimited(GitHubError):
    """A rate limit persisted past the client's bounded waits (or asked for a longer wait)."""

    def __init__(self, method: str, path: str, status: int | None, message: str, *, retry_in: float) -> None:
        super().__init__(method, path, status, f"{message} (retry in {retry_in:.0f} s)")
        self.retry_in = retry_in


class ServerError(GitHubError):
    """5xx after the bounded retries, or a network error the client may not safely repeat."""


class BadResponse(GitHubError):
    """A 2xx answer whose body does not have the documented shape."""


class UnsupportedScope(ValueError):
    """The call does not exist for this scope (e.g. hook deliveries of an enterprise hook)."""
