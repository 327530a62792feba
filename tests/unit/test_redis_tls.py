"""What `rediss://` and the redis_tls_* settings become for redis-py, and how bad ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from anklet.config import AgentSettings, ControllerSettings, RedisSettings
from anklet.redis_tls import RedisTLS, RedisTLSError, client_options


def test_plain_url_without_tls_settings_needs_no_options() -> None:
    assert client_options("redis://127.0.0.1:6379/0") == {}


def test_rediss_verifies_the_server_and_its_name_by_default() -> None:
    assert client_options("rediss://redis.example:6380/0") == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def test_ca_and_client_certificate_are_passed_through() -> None:
    tls = RedisTLS(ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem")
    assert client_options("rediss://h/0", tls) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    assert client_options("rediss://h/0", RedisTLS(check_hostname=False))["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("url", "tls", "message"),
    [
        ("redis://h/0", RedisTLS(ca_file="/ca.pem"), "not rediss://"),
        ("redis://h/0", RedisTLS(check_hostname=False), "not rediss://"),
        ("rediss://h/0", RedisTLS(key_file="/k.pem"), "without redis_tls_cert_file"),
        ("rediss://h/0?ssl_cert_reqs=none", None, "ssl_cert_reqs"),
        ("rediss://h/0?ssl_check_hostname=false", None, "ssl_check_hostname"),
    ],
)
def test_mismatched_settings_are_refused(url: str, tls: RedisTLS | None, message: str) -> None:
    with pytest.raises(RedisTLSError, match=message):
        client_options(url, tls)


@pytest.mark.parametrize("cls", [RedisSettings, ControllerSettings, AgentSettings])
def test_every_process_reads_the_same_tls_variables(
    cls: type[RedisSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for f in (ca, cert, key):
        f.write_text("PEM")
    monkeypatch.setenv("ANKLET_REDIS_URL", "rediss://redis.example:6380/0")
    monkeypatch.setenv("ANKLET_REDIS_TLS_CA_FILE", str(ca))
    monkeypatch.setenv("ANKLET_REDIS_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("ANKLET_REDIS_TLS_KEY_FILE", str(key))
    monkeypatch.setenv("ANKLET_REDIS_TLS_CHECK_HOSTNAME", "false")
    assert cls().redis_tls() == RedisTLS(str(ca), str(cert), str(key), check_hostname=False)


def test_tls_settings_by_field_name_for_config_files(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("PEM")
    s = AgentSettings(redis_url="rediss://h/0", redis_tls_ca_file=tmp_path / "ca.pem")  # type: ignore[arg-type]
    assert s.redis_tls().ca_file == str(tmp_path / "ca.pem")


def test_a_missing_ca_file_or_plain_url_stops_the_process_without_echoing_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANKLET_REDIS_URL", "redis://:hunter2@redis.example/0")
    monkeypatch.setenv("ANKLET_REDIS_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as missing:
        AgentSettings()
    (tmp_path / "ca.pem").write_text("PEM")
    monkeypatch.setenv("ANKLET_REDIS_TLS_CA_FILE", str(tmp_path / "ca.pem"))
    with pytest.raises(ValidationError, match="not rediss://") as plain:
        ControllerSettings()
    for error in (missing, plain):
        assert "hunter2" not in str(error.value)
