"""`redis+cluster://` URLs: parsing, options, and no password in any text."""

from __future__ import annotations

import pytest

from anklet import redis_cluster
from anklet.credentials_cli import credential_url
from anklet.redis_startup import describe
from anklet.redis_tls import RedisTLS, RedisTLSError, client_options


def test_a_full_url() -> None:
    parsed = redis_cluster.parse("redis+cluster://agent:s%40cret@10.0.0.1:7000,node-b,[fd00::3]:7002/0")
    assert parsed.nodes == (("10.0.0.1", 7000), ("node-b", 6379), ("fd00::3", 7002))
    assert (parsed.username, parsed.password, parsed.tls) == ("agent", "s@cret", False)
    assert redis_cluster.parse("rediss+cluster://n1").tls


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0",
        "redis+cluster:///0",  # no node
        "redis+cluster://n1/1",  # Cluster has database 0 only
        "redis+cluster://n1:0",
        "redis+cluster://n1/0?ssl_cert_reqs=none",
        "redis+cluster://fd00::1:7000",
    ],
)
def test_malformed_urls_are_refused_without_quoting_them(url: str) -> None:
    secret = url.replace("://", "://u:hunter2@", 1)
    with pytest.raises(ValueError) as caught:
        redis_cluster.parse(secret)
    assert "hunter2" not in str(caught.value)


def test_no_password_in_repr_or_description() -> None:
    url = "redis+cluster://u:hunter2@n1:7000,n2:7001"
    for text in (repr(redis_cluster.parse(url)), describe(url)):
        assert "hunter2" not in text
    assert describe(url) == "cluster via n1:7000,n2:7001"


def test_client_options_carry_credentials_and_tls() -> None:
    url = "rediss+cluster://u:pw@n1"
    kwargs = redis_cluster.client_kwargs(
        redis_cluster.parse(url), {"decode_responses": True}, client_options(url, RedisTLS(ca_file="/ca"))
    )
    assert kwargs["ssl"] is True and kwargs["ssl_ca_certs"] == "/ca"
    assert (kwargs["username"], kwargs["password"], kwargs["decode_responses"]) == ("u", "pw", True)
    with pytest.raises(RedisTLSError):
        client_options("redis+cluster://n1", RedisTLS(ca_file="/ca"))


def test_issued_credentials_keep_every_node() -> None:
    issued = credential_url("redis+cluster://admin:old@n1:7000,n2:7001/0", "anklet-host-mac-1", "p/w")
    assert issued == "redis+cluster://anklet-host-mac-1:p%2Fw@n1:7000,n2:7001/0"
    sentinel = credential_url("redis+sentinel://s1,s2/anklet/0?sentinel_password=x", "u", "p")
    assert sentinel == "redis+sentinel://u:p@s1,s2/anklet/0?sentinel_password=x"
