"""TLS to Redis: what `rediss://` URLs and the ``redis_tls_*`` settings mean for redis-py.

One pure function turns the settings into client options, so the controller, the agent and
the admin tools all connect the same way. The server's certificate is always verified (against
the system's trust store plus `ca_file`), and its name checked against the URL's host unless
`check_hostname` is explicitly turned off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit


class RedisTLSError(ValueError):
    pass


@dataclass(frozen=True)
class RedisTLS:
    """TLS options for a `rediss://` URL; all unset means the system's trust store only."""

    ca_file: str | None = None  # PEM CA bundle that signed the server's certificate
    cert_file: str | None = None  # client certificate (PEM) for servers that require mutual TLS
    key_file: str | None = None  # its private key (PEM); may be omitted when cert_file holds both
    check_hostname: bool = True

    @property
    def configured(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.key_file or not self.check_hostname)


def client_options(url: str, tls: RedisTLS | None = None) -> dict[str, Any]:
    """redis-py keyword arguments for `url` with `tls`; raises RedisTLSError on a mismatch.

    TLS options with a plain `redis://` URL are refused rather than ignored (the operator meant
    TLS and would not get it), and so are `ssl_*` query parameters in the URL, which would
    otherwise override these settings (e.g. `?ssl_cert_reqs=none` turns verification off)."""
    tls = tls or RedisTLS()
    parts = urlsplit(url)
    overrides = sorted(k for k in parse_qs(parts.query) if k.lower().startswith("ssl"))
    if overrides:
        raise RedisTLSError(
            f"the Redis URL sets {', '.join(overrides)}; use the redis_tls_* settings instead"
        )
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        from anklet import redis_sentinel

        redis_sentinel.parse(url)  # a malformed Sentinel URL fails here, where settings are read
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        from anklet import redis_cluster

        redis_cluster.parse(url)
    if parts.scheme not in ("rediss", "rediss+sentinel", "rediss+cluster"):
        if tls.configured:
            raise RedisTLSError(
                "redis_tls_* settings are set but the Redis URL is not rediss:// (or rediss+sentinel://, "
                "rediss+cluster://); use it for TLS"
            )
        return {}
    if tls.key_file and not tls.cert_file:
        raise RedisTLSError("redis_tls_key_file is set without redis_tls_cert_file")
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": tls.check_hostname}
    if tls.ca_file:
        options["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        options["ssl_certfile"] = tls.cert_file
        options["ssl_keyfile"] = tls.key_file
    return options
