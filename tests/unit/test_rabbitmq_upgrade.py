"""The rabbitmq role's upgrade filters (roles/rabbitmq/filter_plugins/rabbitmq_upgrade.py): which
version changes a broker may make in place, and the versions a host's package sources offer."""

from __future__ import annotations

import pytest
from file_module import load

plugin = load("roles/rabbitmq/filter_plugins/rabbitmq_upgrade.py")
step = plugin.rabbitmq_upgrade_step


@pytest.mark.parametrize(
    ("installed", "wanted"),
    [
        ("3.10.8", "3.10.25"),
        ("3.10.8", "3.11.28"),
        ("3.12.14", "3.13.7"),
        ("3.13.7", "4.0.5"),
        ("4.0.5", "4.1.0"),
    ],
)
def test_a_patch_release_or_the_next_series_is_an_upgrade(installed: str, wanted: str) -> None:
    assert step(installed, wanted)["action"] == "upgrade"


def test_the_same_version_is_nothing_to_do() -> None:
    assert step("3.10.8", "3.10.8") == {"action": "none", "why": "already runs RabbitMQ 3.10.8"}


def test_debian_12_to_13_is_refused_with_the_path_to_take() -> None:
    """3.10 (Debian 12) to 4.0 (Debian 13) skips four series: refused, naming each of them."""
    said = step("3.10.8", "4.0.5")
    assert said["action"] == "refuse"
    assert said["why"].startswith("RabbitMQ 3.10.8 to 4.0.5 is not a supported upgrade")
    assert "3.10 -> 3.11 -> 3.12 -> 3.13 -> 4.0" in said["why"]
    assert "Upgrade to the last 3.11.x first" in said["why"]


@pytest.mark.parametrize(("installed", "wanted"), [("4.0.5", "3.10.8"), ("3.10.8", "3.10.7")])
def test_a_downgrade_is_refused(installed: str, wanted: str) -> None:
    said = step(installed, wanted)
    assert said["action"] == "refuse" and "it is a downgrade" in said["why"], said


@pytest.mark.parametrize(("installed", "wanted"), [("4.2.1", "4.3.0"), ("3.7.28", "3.8.0")])
def test_a_series_outside_the_table_is_refused(installed: str, wanted: str) -> None:
    said = step(installed, wanted)
    assert said["action"] == "refuse" and "knows the upgrade paths between 3.8 and 4.2" in said["why"], said


@pytest.mark.parametrize("wanted", ["3.10", "4", "", "3.10.8-1", "latest"])
def test_a_malformed_version_is_refused_by_name(wanted: str) -> None:
    said = step("3.10.8", wanted)
    assert said == {"action": "refuse", "why": f"{wanted!r} is not a RabbitMQ version of the form X.Y.Z"}


# `apt-cache show rabbitmq-server` on a host with two sources (fields cut), and dnf repoquery's.
APT_SHOW = """Package: rabbitmq-server
Version: 3.10.8-1.1
Depends: adduser, erlang-base | erlang-base-hipe

Package: rabbitmq-server
Version: 1:3.11.28-1
Description-md5: 0123456789abcdef
"""


def test_the_versions_apt_offers_are_read_without_epoch_or_revision() -> None:
    assert plugin.rabbitmq_package_versions(APT_SHOW) == ["3.10.8", "3.11.28"]


def test_the_versions_dnf_offers_are_read_in_order_once_each() -> None:
    listing = "3.13.7\n\n3.12.14\n3.13.7\nLast metadata expiration check: 0:01:02 ago\n"
    assert plugin.rabbitmq_package_versions(listing) == ["3.12.14", "3.13.7"]


def test_no_source_offers_nothing() -> None:
    assert plugin.rabbitmq_package_versions("") == []
