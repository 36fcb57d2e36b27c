"""Where the token and downloads may go (devrev_api.config), and control characters neutralised
(plumbing.cli): the rules alone, without the emulator (tests/test_hostile_network.py runs them)."""
from __future__ import annotations

import logging

import pytest

from devrev_api.config import address_refusal, check_api_host, is_devrev_host, is_local_api
from devrev_api.errors import ConfigError
from plumbing.cli import RedactingFormatter, Redactor, neutralise


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "172.16.0.1",
                                     "192.168.0.1", "169.254.169.254", "fe80::1%eth0", "fd00::1", "0.0.0.0",
                                     "100.64.0.1", "224.0.0.1", "::ffff:169.254.169.254", "not-an-ip"])
def test_inner_addresses_are_refused(address):
    assert address_refusal(address, allow_loopback=False) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_refusal(address, allow_loopback=False) is None


def test_loopback_only_passes_for_the_local_emulator():
    assert address_refusal("127.0.0.1", allow_loopback=True) is None
    assert address_refusal("::1", allow_loopback=True) is None
    assert "private" in address_refusal("10.0.0.1", allow_loopback=True)
    assert "link-local" in address_refusal("169.254.169.254", allow_loopback=True)


@pytest.mark.parametrize("url, local", [("http://127.0.0.1:8080", True), ("http://localhost:1", True),
                                        ("http://[::1]:9", True), ("https://127.0.0.1:8443", False),
                                        ("https://api.devrev.ai", False), ("http://10.0.0.1", False)])
def test_the_local_emulator_is_a_loopback_http_url(url, local):
    assert is_local_api(url) is local


@pytest.mark.parametrize("host, ok", [("api.devrev.ai", True), ("devrev.ai", True), ("API.DevRev.AI.", True),
                                      ("api.us-east-1.devrev.ai", True), ("devrev.ai.evil.example", False),
                                      ("evildevrev.ai", False), ("api.devrev.ai-proxy.example", False), ("", False)])
def test_devrev_domains(host, ok):
    assert is_devrev_host(host) is ok


def test_a_host_outside_devrev_needs_to_be_allowed():
    assert check_api_host("https://api.devrev.ai", None) == "DevRev API: api.devrev.ai"
    assert "loopback" in check_api_host("http://127.0.0.1:8080", None)
    with pytest.raises(ConfigError, match="DEVREV_ALLOW_HOST=devrev.corp.example"):
        check_api_host("https://devrev.corp.example", None)
    with pytest.raises(ConfigError, match="outside DevRev's domains"):
        check_api_host("https://devrev.corp.example", "other.example")
    assert "allowed by DEVREV_ALLOW_HOST" in check_api_host("https://devrev.corp.example:8443",
                                                            "x.example, DEVREV.corp.example")
    with pytest.raises(ConfigError, match="set in .env"):
        check_api_host("https://devrev.corp.example", "devrev.corp.example", allowed_from_file=True)


def test_neutralise_keeps_newlines_and_tabs_and_escapes_the_rest():
    text = "a\x1b[31mred\x07\tb\nc\rd\x08\x7f\x9b2J\u202egnp.exe\u2066x"
    assert neutralise(text) == "a\\x1b[31mred\\x07\tb\nc\\rd\\x08\\x7f\\x9b2J\\u202egnp.exe\\u2066x"
    assert neutralise("a\rb", keep="\r") == "a\rb"
    assert neutralise("plain: é ü 中") == "plain: é ü 中"


def test_log_lines_are_neutralised_in_their_arguments_and_their_message():
    formatter = RedactingFormatter("%(levelname)s %(message)s", Redactor("tok-SECRET-123456789"))
    record = logging.LogRecord("merging.engine", logging.WARNING, __file__, 1, "moved %s for \x1b[2J%s",
                               ("REVU-1\x1b]0;pwned\x07", "tok-SECRET-123456789"), None)
    line = formatter.format(record)
    assert "\x1b" not in line and "\x07" not in line
    assert line == "WARNING moved REVU-1\\x1b]0;pwned\\x07 for \\x1b[2J***"
