"""A faithful fake GitHub for the dev stack and tests (see README.md in this package).

REST endpoints and webhook payloads follow GitHub's OpenAPI descriptions; jobs are assigned to
JIT runners by GitHub's label rule; the runner stand-in (``runner.py``) is served as a release
tarball so the real in-VM install script can fetch and start it.
"""

from anklet.dev.fake_github.errors import ApiError
from anklet.dev.fake_github.faults import Faults
from anklet.dev.fake_github.releases import RUNNER_VERSION, asset_name
from anklet.dev.fake_github.server import FakeGitHub

__all__ = ["RUNNER_VERSION", "ApiError", "FakeGitHub", "Faults", "asset_name"]
