"""Registration of the `script` handler (entry point ``anklet.handlers: script``)."""

from plugins.handlers.script.script import ScriptHandler

PLUGIN = ScriptHandler()
