"""`redis+sentinel://` URLs: parsing, the options each side gets, and no password in any text."""

from __future__ import annotations

import pytest

from anklet import redis_sentinel
from anklet.redis_startup import describe
from anklet.redis_tls import RedisTLS, RedisTLSError, client_options


def test_a_full_url() -> None:
    url = "redis+sentinel://agent:s%40cret@10.0.0.1:26380,sentinel-b,[fd00::3]:26381/anklet/2?sentinel_password=sp"
    parsed = redis_sentinel.parse(url)
    assert parsed.sentinels == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("fd00::3", 26381))
    assert (parsed.service, parsed.db, parsed.tls) == ("anklet", 2, False)
    assert (parsed.username, parsed.password) == ("agent", "s@cret")
    assert (parsed.sentinel_username, parsed.sentinel_password) == (None, "sp")


def test_defaults_and_tls() -> None:
    parsed = redis_sentinel.parse("rediss+sentinel://s1/mymaster")
    assert parsed.sentinels == (("s1", 26379),)
    assert (parsed.db, parsed.tls, parsed.username, parsed.password) == (0, True, None, None)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0",  # not a Sentinel URL
        "redis+sentinel:///anklet",  # no Sentinel
        "redis+sentinel://s1",  # no service
        "redis+sentinel://s1/anklet/x",  # db not a number
        "redis+sentinel://s1/anklet/0/extra",
        "redis+sentinel://s1:0/anklet",
        "redis+sentinel://s1:99999/anklet",
        "redis+sentinel://fd00::1:26379/anklet",  # IPv6 without brackets
        "redis+sentinel://[fd00::1/anklet",
        "redis+sentinel://s1/anklet?ssl_cert_reqs=none",  # TLS is the redis_tls_* settings' job
        "redis+sentinel://s1/anklet?sentinel_password=a&sentinel_password=b",
    ],
)
def test_malformed_urls_are_refused_without_quoting_them(url: str) -> None:
    secret = url.replace("redis+sentinel://", "redis+sentinel://u:hunter2@", 1)
    with pytest.raises(ValueError) as caught:
        redis_sentinel.parse(secret)
    assert "hunter2" not in str(caught.value)


def test_no_password_in_repr_or_description() -> None:
    parsed = redis_sentinel.parse("redis+sentinel://u:hunter2@s1,s2/anklet?sentinel_password=other")
    for text in (repr(parsed), parsed.describe(), describe("redis+sentinel://u:hunter2@s1,s2/anklet")):
        assert "hunter2" not in text and "other" not in text
    assert describe("redis+sentinel://u:hunter2@s1/anklet") == "service anklet via sentinels s1:26379 db 0"


def test_each_side_gets_its_own_credentials_and_only_socket_options_reach_the_sentinels() -> None:
    parsed = redis_sentinel.parse(
        "redis+sentinel://u:pw@s1/anklet/1?sentinel_username=su&sentinel_password=sp"
    )
    common = {"decode_responses": True, "socket_timeout": 30, "socket_connect_timeout": 5, "retry": "R"}
    redis_side, sentinel_side = redis_sentinel.client_kwargs(parsed, common, {})
    assert redis_side == {**common, "db": 1, "username": "u", "password": "pw"}
    assert sentinel_side == {
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "username": "su",
        "password": "sp",
    }


def test_tls_reaches_both_sides() -> None:
    url = "rediss+sentinel://s1/anklet"
    options = client_options(url, RedisTLS(ca_file="/ca.pem"))
    redis_side, sentinel_side = redis_sentinel.client_kwargs(redis_sentinel.parse(url), {}, options)
    for side in (redis_side, sentinel_side):
        assert (
            side["ssl"] is True and side["ssl_ca_certs"] == "/ca.pem" and side["ssl_cert_reqs"] == "required"
        )


def test_tls_settings_with_a_plain_sentinel_url_are_refused() -> None:
    with pytest.raises(RedisTLSError, match="rediss"):
        client_options("redis+sentinel://s1/anklet", RedisTLS(ca_file="/ca.pem"))
