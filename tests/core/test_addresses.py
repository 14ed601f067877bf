import pytest

from turnpike.core.addresses import AddressPolicy, embedded_ipv4

FORBIDDEN = [
    "169.254.169.254",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::808:808",
    "2002:a9fe:a9fe::1",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "::1",
    "::",
    "::127.0.0.1",
    "fe80::1",
    "::ffff:0:7f00:1",
    "::ffff:0:a9fe:a9fe",
    "::ffff:0:808:808",
    "fec0::1",
    "feff:ffff::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "2001:db8::1",
    "not-an-ip",
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_default_denies(address: str) -> None:
    assert not AddressPolicy().permits(address)


GLOBAL = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", GLOBAL)
def test_default_permits_global(address: str) -> None:
    assert AddressPolicy().permits(address)


def test_allow_list_reopens_exactly_what_it_names() -> None:
    policy = AddressPolicy(allow=["127.0.0.0/8"])
    assert policy.permits("127.0.0.1")
    assert policy.permits("::ffff:127.0.0.1")
    assert not policy.permits("::1")
    assert not policy.permits("10.0.0.1")
    assert not policy.permits("169.254.169.254")


def test_embedded_forbidden_ipv4_beats_allowing_the_ipv6_form() -> None:
    policy = AddressPolicy(allow=["64:ff9b::/96", "2002::/16"])
    assert not policy.permits("64:ff9b::a9fe:a9fe")
    assert not policy.permits("2002:a9fe:a9fe::1")
    assert policy.permits("64:ff9b::808:808")


def test_extra_deny_ranges() -> None:
    policy = AddressPolicy(deny=["8.8.8.0/24"])
    assert not policy.permits("8.8.8.8")
    assert policy.permits("8.8.4.4")


def test_embedded_ipv4() -> None:
    assert str(embedded_ipv4(__import__("ipaddress").ip_address("64:ff9b::a9fe:a9fe"))) == (
        "169.254.169.254"
    )


def test_bad_cidr_is_named() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        AddressPolicy(allow=["10.0.0.0/33"])
