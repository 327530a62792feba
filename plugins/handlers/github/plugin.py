"""Registration of the `github` handler (entry point ``anklet.handlers: github``)."""

from plugins.handlers.github.handler import GitHubHandler

PLUGIN = GitHubHandler()
