"""Pure parsing in the Anka driver: envelopes, errors, versions, VM objects, env-on-stdin."""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_agent.anka import (
    AnkaAlreadyExists,
    AnkaError,
    AnkaNotFound,
    AnkaOutputError,
    DownloadSize,
    Envelope,
    check_envelope,
    env_script,
    error_for,
    parse_envelope,
    parse_timestamp,
    parse_version,
    vm_info_from_dict,
)

OK_SPACED = '{"status": "OK", "code": 0, "body": {"version": "3.9.1"}, "message": ""}'
OK_COMPACT = '{"status":"OK","code":0,"body":{},"message":"6c14r: available locally"}'


# --- envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "body", "message"),
    [
        pytest.param(OK_SPACED, {"version": "3.9.1"}, "", id="spaced-separators"),
        pytest.param(OK_COMPACT, {}, "6c14r: available locally", id="compact-separators"),
        pytest.param(OK_SPACED + "\n", {"version": "3.9.1"}, "", id="trailing-newline"),
        pytest.param(OK_SPACED + "\r\n\r\n  \n", {"version": "3.9.1"}, "", id="trailing-blank-lines"),
        pytest.param(
            '{"status": "OK", "body": {"progress": 50}, "message": "pulling"}\n' + OK_COMPACT,
            {},
            "6c14r: available locally",
            id="progress-lines-first",
        ),
        pytest.param("Installing macOS...\n" + OK_SPACED, {"version": "3.9.1"}, "", id="human-text-first"),
        pytest.param(OK_SPACED.encode(), {"version": "3.9.1"}, "", id="bytes"),
    ],
)
def test_parses_the_last_non_empty_line(stdout: str | bytes, body: Any, message: str) -> None:
    envelope = parse_envelope(stdout)
    assert (envelope.status, envelope.body, envelope.message) == ("OK", body, message)


def test_error_envelope_fields() -> None:
    raw = '{"status": "ERROR", "code": 3, "message": "x: not found", "exception_type": "NotFound"}'
    assert parse_envelope(raw) == Envelope("ERROR", 3, None, "x: not found", "NotFound")


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        ('{"status": "ERROR", "code": "3", "message": 5}', None, "5"),
        ('{"status": "ERROR", "code": true, "message": null}', None, ""),
    ],
)
def test_odd_field_types_are_normalised(raw: str, code: int | None, message: str) -> None:
    envelope = parse_envelope(raw)
    assert (envelope.code, envelope.message) == (code, message)


@pytest.mark.parametrize(
    "stdout",
    [
        pytest.param("", id="empty"),
        pytest.param("  \n\n", id="blank"),
        pytest.param(OK_SPACED + "\nsome garbage", id="non-json-last-line"),
        pytest.param(OK_SPACED[: len(OK_SPACED) // 2], id="truncated"),
        pytest.param('["status", "OK"]', id="array"),
        pytest.param('{"code": 0, "body": {}}', id="no-status"),
        pytest.param('{"status": 1}', id="status-not-a-string"),
        pytest.param("null", id="null"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested"),
        pytest.param(b"\xff\xfe\x00garbage", id="invalid-utf8"),
    ],
)
def test_malformed_output_raises_output_error(stdout: str | bytes) -> None:
    with pytest.raises(AnkaOutputError):
        parse_envelope(stdout, argv=["anka", "-j", "version"], exit_status=0)


def test_output_error_carries_context() -> None:
    with pytest.raises(AnkaOutputError) as caught:
        parse_envelope("", argv=["anka", "-j", "list"], exit_status=1, stderr="anka: boom\n")
    assert caught.value.argv == ["anka", "-j", "list"] and caught.value.exit_status == 1
    assert "boom" in caught.value.message and caught.value.code is None


@given(st.one_of(st.text(), st.binary()))
@settings(max_examples=300, deadline=None)
def test_fuzz_arbitrary_output_only_ever_raises_output_error(stdout: str | bytes) -> None:
    try:
        envelope = parse_envelope(stdout)
    except AnkaOutputError:
        return
    assert isinstance(envelope.status, str)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@given(
    prefix=st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"])), _json_values.map(json.dumps)
        ),
        max_size=4,
    ),
    last=st.one_of(
        _json_values.map(json.dumps),
        st.fixed_dictionaries(
            {
                "status": st.sampled_from(["OK", "ERROR"]),
                "code": _json_values,
                "body": _json_values,
                "message": _json_values,
            }
        ).map(json.dumps),
    ),
    newline=st.sampled_from(["", "\n", "\r\n"]),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_json_like_output(prefix: list[str], last: str, newline: str) -> None:
    stdout = "\n".join([*prefix, last]) + newline
    try:
        envelope = parse_envelope(stdout)
    except AnkaOutputError:
        return
    decoded = json.loads(last)
    assert isinstance(decoded, dict) and envelope.status == decoded["status"]


@given(status=st.sampled_from(["OK", "ERROR"]), body=_json_values, compact=st.booleans())
@settings(max_examples=100, deadline=None)
def test_round_trip_of_well_formed_envelopes(status: str, body: Any, compact: bool) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    raw = json.dumps({"status": status, "code": 0, "body": body, "message": "m"}, separators=separators)
    envelope = parse_envelope(raw)
    assert (envelope.status, envelope.body, envelope.message) == (status, body, "m")


# --- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (3, "vm: not found", AnkaNotFound),
        (None, "84266873: tag 9c: not found", AnkaNotFound),
        (1, "Template NOT FOUND in registry", AnkaNotFound),
        (18, "vm1: already exists", AnkaAlreadyExists),
        (1, "connection refused", AnkaError),
        (None, "", AnkaError),
    ],
)
def test_error_mapping(code: int | None, message: str, expected: type[AnkaError]) -> None:
    error = error_for(message, argv=["anka"], code=code, exit_status=1)
    assert type(error) is expected and error.code == code and error.message == message


def test_success_needs_exit_zero_and_status_ok() -> None:
    ok = Envelope("OK", 0, {}, "")
    assert check_envelope(ok, exit_status=0) is ok
    with pytest.raises(AnkaError, match="exited with status 1"):
        check_envelope(ok, exit_status=1)
    with pytest.raises(AnkaNotFound) as caught:
        check_envelope(Envelope("ERROR", 3, None, "x: not found"), argv=["anka", "show", "x"], exit_status=0)
    assert caught.value.exit_status == 0 and caught.value.argv == ["anka", "show", "x"]


def test_error_string_names_the_command() -> None:
    error = AnkaError("boom", argv=["anka", "-j", "start", "my vm"], code=7, exit_status=1)
    assert str(error) == "boom (code=7, exit=1, argv=anka -j start 'my vm')"


# --- versions, timestamps, VM objects ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.9.1", (3, 9, 1)),
        ("3.9.0 (build 123)", (3, 9, 0)),
        ("v4.0.1", (4, 0, 1)),
        ("V3.3.10", (3, 3, 10)),
        ("3.10.2-beta.1", (3, 10, 2)),
        (" 3.8.6.197 ", (3, 8, 6)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "3.9", "three.9.1", "3.x.1", "v", "(build 1) 3.9.1"])
def test_parse_version_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_version(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-01-06T12:34:52Z", datetime(2022, 1, 6, 12, 34, 52, tzinfo=UTC)),
        ("2022-01-06T12:34:52.250000Z", datetime(2022, 1, 6, 12, 34, 52, 250000, tzinfo=UTC)),
        ("2022-01-06T14:34:52+02:00", datetime(2022, 1, 6, 12, 34, 52, tzinfo=UTC)),
        ("2022-01-06T12:34:52", datetime(2022, 1, 6, 12, 34, 52, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (1641472492, None),
    ],
)
def test_parse_timestamp(value: object, expected: datetime | None) -> None:
    assert parse_timestamp(value) == expected


def test_vm_info_from_show_body() -> None:
    info = vm_info_from_dict(
        {
            "uuid": "u-1",
            "name": "anklet-vm-1",
            "version": "6c14r",
            "status": "running",
            "ip": "192.168.64.3",
            "cpu_cores": 6,
            "ram": "14G",
            "ram_size": 15032385536,
            "image_size": 2147483648,
            "access_date": "2026-01-02T03:04:05Z",
        }
    )
    assert (info.name, info.uuid, info.version, info.status, info.ip) == (
        "anklet-vm-1",
        "u-1",
        "6c14r",
        "running",
        "192.168.64.3",
    )
    assert (info.cpu_cores, info.ram_size, info.image_size) == (6, 15032385536, 2147483648)
    assert info.access_date == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_vm_info_from_a_sparse_list_row() -> None:
    info = vm_info_from_dict({"id": "u-2", "name": "clone", "status": "stopped", "ip": "", "ram": "4G"})
    assert (info.uuid, info.version, info.ip, info.cpu_cores) == ("u-2", None, None, None)
    assert info.ram_size == 4 * 1024**3


@pytest.mark.parametrize("data", [[], "vm", None, {"status": "running"}])
def test_vm_info_rejects_non_vm_objects(data: object) -> None:
    with pytest.raises(AnkaOutputError):
        vm_info_from_dict(data)


def test_download_size_to_download() -> None:
    assert DownloadSize(size=30, cached=18, available=100).to_download == 12
    assert DownloadSize(size=10, cached=18, available=100).to_download == 0


# --- env on stdin ----------------------------------------------------------------------------


def test_env_script_quotes_values_and_ends_with_the_script() -> None:
    script = env_script("echo done", {"TOKEN": "a b'c$HOME", "EMPTY": ""})
    lines = script.splitlines()
    assert lines[-1] == "echo done" and script.endswith("\n")
    assert shlex.split(lines[0]) == ["export", "TOKEN=a b'c$HOME"]
    assert shlex.split(lines[1]) == ["export", "EMPTY="]


@given(
    st.dictionaries(
        st.from_regex(r"V_[A-Z0-9_]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"])),
        max_size=3,
    )
)
@settings(max_examples=40, deadline=None)
def test_env_script_round_trips_through_bash(env: dict[str, str]) -> None:
    script = env_script('for k in "$@"; do printf "%s\\0" "${!k}"; done', env)
    program = f"set -- {' '.join(env)}\n{script}"
    out = subprocess.run(["bash", "-s"], input=program.encode(), capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [v.encode() for v in env.values()]


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "", "X=Y", "A;rm"])
def test_env_script_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        env_script("true", {name: "v"})
