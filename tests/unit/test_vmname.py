from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anklet.vmname import NotManagedByAnklet, VMName


@given(st.uuids(), st.integers(min_value=1, max_value=999_999))
def test_round_trip(uid: uuid.UUID, attempt: int) -> None:
    name = VMName(str(uid), attempt)
    assert VMName.parse(str(name)) == name


@pytest.mark.parametrize(
    "foreign",
    [
        "anklet",
        "84266873-da90-4e0d-903b-ed0233471f9f",
        "anklet-vm-",
        "anklet-vm-abc",
        "anklet-vm-abc-a0",
        "mgmtManaged-abc",
        "anklet-vm-abc-a1 ",
        "anklet-vm-ab/c-a1",
    ],
)
def test_foreign_names_are_not_ours(foreign: str) -> None:
    with pytest.raises(NotManagedByAnklet):
        VMName.parse(foreign)
