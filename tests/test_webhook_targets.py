"""The SSRF guard of webhook targets (quotas/events/targets.py, DESIGN §7a)."""

import pytest

from quotas.events.targets import (
    TargetRefused,
    address_refusal,
    target_check,
    target_resolve,
)


@pytest.mark.parametrize(
    "address, reason",
    [
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "a non-public address"),
        ("::1", "a loopback address"),
        ("::", "an unspecified address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("93.184.215.14", None),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_each_kind_of_address_is_refused_or_let_through(address, reason):
    assert address_refusal(address) == reason


def _resolver(*addresses):
    def resolve(host, port):
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://10.0.0.7/hook", "resolves to a private address (10.0.0.7)"),
        ("http://127.0.0.1:8000/", "a loopback address"),
        ("http://[::1]/", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "a loopback address"),
        ("http://[fc00::1]/", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        # A name that resolves to the loopback, with the system's resolver.
        ("http://localhost:8000/", "'localhost' resolves to a loopback address"),
        ("ftp://93.184.215.14/", "Only http and https"),
        ("file:///etc/passwd", "Only http and https"),
        ("gopher://93.184.215.14/", "Only http and https"),
        ("https:///path", "no host"),
        ("https://u:p@93.184.215.14/", "user name or password"),
        ("https://93.184.215.14:99999/", "Not a valid URL"),
        ("https://no-such-host.invalid/", "does not resolve"),
    ],
)
def test_refused_urls_say_why(url, message):
    with pytest.raises(TargetRefused) as refused:
        target_check(url, allow_private=False)

    assert message in str(refused.value)


def test_a_name_is_refused_if_any_of_its_addresses_is_private():
    with pytest.raises(TargetRefused, match="a private address"):
        target_check(
            "https://hooks.example.com/",
            allow_private=False,
            resolver=_resolver("93.184.215.14", "10.0.0.1"),
        )


def test_a_public_target_keeps_its_name_for_the_host_header_and_tls():
    target = target_resolve(
        "https://hooks.example.com:8443/in?x=1",
        allow_private=False,
        resolver=_resolver("93.184.215.14"),
    )

    assert target.address == "93.184.215.14"
    assert target.host == "hooks.example.com"
    assert target.host_header == "hooks.example.com:8443"
    assert target.request_path == "/in?x=1"
    assert target.port == 8443


def test_private_targets_pass_when_allowed():
    target = target_resolve("http://localhost:9000", allow_private=True)

    assert target.address in {"127.0.0.1", "::1"}
    assert target.host_header == "localhost:9000"
    assert target.request_path == "/"


def test_ipv6_literals_keep_their_brackets_in_the_host_header():
    target = target_resolve("http://[2606:4700:4700::1111]/", allow_private=False)

    assert target.address == "2606:4700:4700::1111"
    assert target.host_header == "[2606:4700:4700::1111]"
