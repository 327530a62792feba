from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
import yaml

from anklet import tables
from anklet.tables import Style, Styled


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (200 * 86400, "200d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_ages_read_as_in_kubectl(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


def test_columns_are_aligned_on_the_plain_text_even_when_colored() -> None:
    rows = [["a", Styled("Running", Style.CYAN)], ["long-name", "x"]]
    plain = tables.render(["NAME", "PHASE"], rows, color=False)
    assert plain == "NAME        PHASE\na           Running\nlong-name   x\n"
    colored = tables.render(["NAME", "PHASE"], rows, color=True)
    assert "\x1b[36mRunning\x1b[0m" in colored
    assert colored.replace("\x1b[36m", "").replace("\x1b[0m", "") == plain


def test_a_table_without_headers_lists_pairs() -> None:
    assert tables.render(None, [["HOSTS", "2"], ["VM SLOTS", "4"]]) == "HOSTS      2\nVM SLOTS   4\n"
    assert tables.render(None, []) == ""


def test_minimum_widths_keep_room_for_later_rows() -> None:
    assert tables.widths(["A", "B"], [["x", "y"]], (5, 1)) == [5, 1]


def test_color_only_on_a_terminal_and_never_with_no_color() -> None:
    assert tables.color_enabled(Terminal(), {}) is True
    assert tables.color_enabled(io.StringIO(), {}) is False
    assert tables.color_enabled(Terminal(), {"NO_COLOR": ""}) is False
    assert tables.color_enabled(Terminal(), {"NO_COLOR": "1"}) is False
    assert tables.color_enabled(Terminal(), {"TERM": "dumb"}) is False


def test_dump_json_and_yaml_round_trip() -> None:
    data = {"b": 1, "a": [1, "x"], "none": None}
    assert json.loads(tables.dump(data, "json")) == data
    assert yaml.safe_load(tables.dump(data, "yaml")) == data
    assert list(yaml.safe_load(tables.dump(data, "yaml"))) == ["b", "a", "none"], "keys keep their order"
    with pytest.raises(ValueError, match="unknown output format"):
        tables.dump(data, "xml")


def test_times_parse_as_kubernetes_writes_them() -> None:
    assert tables.parse_time("2026-11-25T12:00:00Z") == datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert tables.parse_time("2026-11-25T12:00:00.123456Z") is not None
    assert tables.parse_time("yesterday") is None
    assert tables.parse_time(None) is None
    assert tables.iso(datetime(2026, 11, 25, 12, tzinfo=UTC)) == "2026-11-25T12:00:00Z"


def test_gib_like_the_printer_columns() -> None:
    assert tables.gib(16384) == "16"
    assert tables.gib(13824) == "13.5"
