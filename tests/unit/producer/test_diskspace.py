"""Free-space checks of the state directory: the thresholds and the words."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.diskspace import (
    FULL_BYTES,
    LOW_BYTES,
    DiskFull,
    Space,
    full_message,
    human,
    is_full,
    low_message,
    measure,
    naming_a_full_disk,
    require_space,
)

MIB = 1024**2


def test_sizes_read_as_people_write_them() -> None:
    assert human(512) == "512 B"
    assert human(3.5 * MIB) == "3.5 MiB"
    assert human(1.5 * 1024**3) == "1.5 GiB"
    assert human(5000 * 1024**3) == "5000.0 GiB"


def test_full_disk_message_names_the_words_the_path_and_the_command() -> None:
    message = full_message(Space(Path("/data/.fleet"), 0, 64 * MIB), then="fleet resume R1")
    assert message.startswith("no space left on device: /data/.fleet (0 B free of 64.0 MiB)")
    assert message.endswith("free some space, then: fleet resume R1")


@pytest.mark.parametrize(
    ("free", "warned"),
    [(0, True), (LOW_BYTES - 1, True), (LOW_BYTES, False), (10 * LOW_BYTES, False)],
)
def test_low_space_warns_below_the_threshold_only(free: int, warned: bool) -> None:
    message = low_message(Space(Path("/s"), free, 100 * LOW_BYTES))
    assert (message is not None) == warned
    if message:
        assert "/s" in message
        assert human(free) in message


@pytest.mark.parametrize(
    ("free", "full"), [(0, True), (FULL_BYTES - 1, True), (FULL_BYTES, False), (LOW_BYTES, False)]
)
def test_full_means_less_than_the_room_sqlite_and_the_broker_need(free: int, full: bool) -> None:
    assert is_full(Space(Path("/s"), free, LOW_BYTES)) is full
    assert FULL_BYTES < LOW_BYTES


def test_this_file_system_is_measured_through_a_missing_folder(tmp_path: Path) -> None:
    space = measure(tmp_path / "not" / "yet")
    assert space.path == tmp_path / "not" / "yet"
    assert 0 <= space.free <= space.total
    if space.free >= FULL_BYTES:
        require_space(tmp_path, then="x")  # no error where there is room


def test_errors_are_named_a_full_disk_only_when_the_disk_is_full(tmp_path: Path) -> None:
    if measure(tmp_path).free < FULL_BYTES:
        pytest.skip("this machine's temporary folder is itself full")
    with pytest.raises(ValueError, match="other"), naming_a_full_disk(tmp_path, then="x"):
        raise ValueError("other")
    with pytest.raises(DiskFull), naming_a_full_disk(tmp_path, then="x"):
        raise DiskFull("already named")
