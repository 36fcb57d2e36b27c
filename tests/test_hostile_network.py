"""Issue 23, sections 3 and 4: downloads go only where they should, and only as far as they
should; what is printed cannot drive the terminal; no core file; the token goes only to DevRev.

Each test asserts the outcome itself: the file on disk not written, the listener or the emulator
reached by nothing, the printed bytes without ESC, RLIMIT_CORE read back as 0, exit 2 with no
connection made.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest
import requests

import find_duplicates
import merge_contacts
import restore_contacts
from devrev_api import assumptions as facts
from devrev_api import downloads, file_hosts
from devrev_api.downloads import STREAM_DISK_MARGIN_BYTES, ArtifactDownloads
from devrev_api.errors import DownloadError, ResponseError, UploadError
from devrev_api.retry_policy import Backoff
from devrev_api.uploads import ArtifactUploads
from devrev_client import DevRevClient
from devrev_sandbox.faults import Faults
from helpers import ROOT, TEST_TOKEN, seed
from plumbing.cli import ExitCode
from plumbing.files import durable_file

ESC = b"\x1b"


def _artifact(sb, number: int) -> dict:
    return sb.state.artifacts[sb.key_id(f"artifact-{number}")]


def _file_requests(sb) -> list[dict]:
    return [e for e in sb.request_log if e["server"] == "files"]


def _downloads_off_emulator(client: DevRevClient) -> ArtifactDownloads:
    """The client's downloads as they are when the API is not the local emulator (production):
    artifacts.locate still answered by the emulator, loopback no longer allowed."""
    return ArtifactDownloads(client.session, timeout=(2.0, 5.0), retry=Backoff(0, 0.001, 0.001),
                             locate=client.locate_artifact, wait=lambda s: None, check_stop=lambda: None,
                             count=lambda key: None, allow_loopback=False)


@contextlib.contextmanager
def listener():
    """A loopback TCP port that records every connection it accepts and the bytes sent on it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.02)
    seen: list[bytes] = []
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                seen.append(conn.recv(4096))
            except OSError:
                seen.append(b"")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def resolve_to_loopback(monkeypatch, name: str) -> None:
    """`name` resolves to 127.0.0.1 for every connection made in this process (a hostile DNS)."""
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        return real("127.0.0.1" if host == name else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


# --------------------------------------------------------------------------- where downloads go
def test_only_the_local_emulator_allows_loopback_downloads(make_sandbox, make_client):
    sb = make_sandbox(seed())
    assert make_client(sb).downloads.allow_loopback is True
    assert DevRevClient(TEST_TOKEN, "https://api.devrev.ai").downloads.allow_loopback is False
    assert DevRevClient(TEST_TOKEN, "https://127.0.0.1:8443").downloads.allow_loopback is False


def test_a_loopback_attachment_url_is_never_fetched_off_the_emulator(make_sandbox, make_client, tmp_path):
    """Against production, a located URL on a loopback service is refused: the service sees no request."""
    sb = make_sandbox(seed())
    client = make_client(sb)
    art = _artifact(sb, 9001)
    path = tmp_path / "a.txt"

    with pytest.raises(DownloadError, match="https"):
        _downloads_off_emulator(client).download_artifact(art["id"], lambda: durable_file(str(path)),
                                                          expected_size=art["file"]["size"])

    assert _file_requests(sb) == []
    assert not path.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("address, kind", [("169.254.169.254", "link-local"), ("10.0.0.7", "private"),
                                           ("192.168.1.1", "private"), ("::ffff:10.1.2.3", "private"),
                                           ("fe80::1", "link-local")])
def test_a_host_resolving_to_an_inner_address_is_never_connected_to(make_sandbox, make_client, monkeypatch,
                                                                    tmp_path, address, kind):
    """A redirect (from the emulator's own loopback file host) to an https host whose name resolves
    to a link-local or private address: refused before any connection; the file is not written."""
    sb = make_sandbox(seed())
    client = make_client(sb)
    art = _artifact(sb, 9001)
    monkeypatch.setattr(file_hosts, "_resolve", lambda host, port: [address] if host == "inner.example" else
                        ["127.0.0.1"])
    resolve_to_loopback(monkeypatch, "inner.example")
    path = tmp_path / "a.txt"
    with listener() as (port, seen):
        redirect = f"https://inner.example:{port}/latest/meta-data/"
        with redirect_to(redirect) as start_port:
            monkeypatch.setattr(client.downloads, "_locate", lambda _id: {"url": f"http://127.0.0.1:{start_port}/s"})
            with pytest.raises(DownloadError, match=kind):
                client.downloads.download_artifact(art["id"], lambda: durable_file(str(path)))
    assert seen == []   # no connection reached the inner address
    assert not path.exists() and os.listdir(tmp_path) == []


def _uploads_to(url: str, *, allow_loopback: bool = False) -> ArtifactUploads:
    """Uploads whose artifacts.prepare names `url` (the rest as the client has it)."""
    return ArtifactUploads(requests.Session(), timeout=(2.0, 5.0), retry=Backoff(0, 0.001, 0.001),
                           prepare=lambda name, mime: {"id": "don:core:dvrv-us-1:devo/1:artifact/1", "url": url,
                                                       "form_data": [{"key": "k", "value": "v"}]},
                           wait=lambda s: None, check_stop=lambda: None, count=lambda key: None,
                           allow_loopback=allow_loopback)


@pytest.mark.parametrize("address, kind", [("169.254.169.254", "link-local"), ("10.0.0.7", "private"),
                                           ("127.0.0.1", "loopback")])
def test_an_upload_goes_only_to_a_public_https_host(monkeypatch, address, kind):
    """A backed-up file sent again (the restore) goes where artifacts.prepare says only if that
    is https on public addresses: an inner address, or plain http off the emulator, gets nothing."""
    monkeypatch.setattr(file_hosts, "_resolve", lambda host, port: [address])
    resolve_to_loopback(monkeypatch, "inner.example")
    with listener() as (port, seen):
        with pytest.raises(UploadError, match=kind):
            _uploads_to(f"https://inner.example:{port}/bucket").upload("a.txt", b"customer data", "text/plain")
        with pytest.raises(UploadError, match="https"):
            _uploads_to(f"http://127.0.0.1:{port}/bucket").upload("a.txt", b"customer data", "text/plain")
    assert seen == []   # no connection at all


def test_an_upload_host_that_resolves_elsewhere_when_connecting_gets_no_byte(monkeypatch):
    monkeypatch.setattr(file_hosts, "_resolve", lambda host, port: ["93.184.216.34"])
    resolve_to_loopback(monkeypatch, "files.rebind.example")
    with listener() as (port, seen):
        with pytest.raises(UploadError, match="loopback"):
            _uploads_to(f"https://files.rebind.example:{port}/b").upload("a.txt", b"customer data", "text/plain")
    assert all(data == b"" for data in seen)


def test_a_name_that_resolves_elsewhere_when_connecting_is_caught_before_a_byte(make_sandbox, make_client,
                                                                               monkeypatch, tmp_path):
    """DNS rebinding: the name resolves to a public address when checked, to loopback when the
    connection is made. The address actually connected to is checked: nothing is sent on it."""
    sb = make_sandbox(seed())
    client = make_client(sb)
    art = _artifact(sb, 9001)
    monkeypatch.setattr(file_hosts, "_resolve", lambda host, port: ["93.184.216.34"])
    resolve_to_loopback(monkeypatch, "files.rebind.example")
    path = tmp_path / "a.txt"
    with listener() as (port, seen):
        fetch = _downloads_off_emulator(client)
        monkeypatch.setattr(fetch, "_locate", lambda _id: {"url": f"https://files.rebind.example:{port}/blob?sig=x"})
        with pytest.raises(DownloadError, match="loopback"):
            fetch.download_artifact(art["id"], lambda: durable_file(str(path)))
    assert all(data == b"" for data in seen)   # connected, refused before the TLS hello: not a byte sent
    assert not path.exists() and os.listdir(tmp_path) == []


def redirect_to(location: str):
    """A loopback host answering every GET with a 302 to `location` (test_client's); yields its port."""
    from test_client import redirect_server
    return redirect_server(location)


# --------------------------------------------------------------------------- how far downloads go
def test_an_endless_attachment_without_a_declared_size_stops_at_the_cap(make_sandbox, make_client, monkeypatch,
                                                                        tmp_path):
    sb = make_sandbox(seed(), faults=Faults(endless_body="download"))
    client = make_client(sb)
    monkeypatch.setattr(facts, "MAX_UNDECLARED_ATTACHMENT_BYTES", 2 << 20)
    path = tmp_path / "a.txt"

    with pytest.raises(DownloadError, match="declares no size") as info:
        client.downloads.download_artifact(_artifact(sb, 9001)["id"], lambda: durable_file(str(path)),
                                           expected_size=None)

    assert "2.0 MiB" in str(info.value)
    assert not path.exists() and os.listdir(tmp_path) == []
    assert [e["fault"] for e in _file_requests(sb)] == ["endless"]


def test_the_free_disk_is_checked_while_an_attachment_streams(make_sandbox, make_client, monkeypatch, tmp_path):
    """The disk fills while the body streams (no declared size, so no check before): the
    download stops before it takes the disk's last STREAM_DISK_MARGIN_BYTES, and leaves nothing."""
    sb = make_sandbox(seed(), faults=Faults(endless_body="download"))
    client = make_client(sb)
    free_at_start = STREAM_DISK_MARGIN_BYTES + (1 << 20)
    monkeypatch.setattr(downloads, "_free_bytes", lambda out: free_at_start - out.tell())
    path = tmp_path / "a.txt"

    with pytest.raises(DownloadError, match="free disk space"):
        client.downloads.download_artifact(_artifact(sb, 9001)["id"], lambda: durable_file(str(path)),
                                           expected_size=None)

    assert not path.exists() and os.listdir(tmp_path) == []


def test_an_endless_api_answer_is_bounded(make_sandbox, make_client, monkeypatch):
    sb = make_sandbox(seed(), faults=Faults(endless_body="works.list"))
    client = make_client(sb)
    monkeypatch.setattr(facts, "MAX_API_ANSWER_BYTES", 1 << 20)

    with pytest.raises(ResponseError, match="had not ended after 1 MiB") as info:
        list(client.list_tickets(sb.key_id("jane-dup")))

    assert len(str(info.value).splitlines()) == 1
    assert [e["fault"] for e in sb.api_calls() if e["endpoint"] == "works.list"] == ["endless"]  # not retried
    assert client.get_self()["id"]   # the client goes on with the next call


# --------------------------------------------------------------------------- what is printed
def test_control_characters_from_devrev_never_reach_the_terminal_or_the_log(make_sandbox, monkeypatch, tmp_path,
                                                                            capfd):
    sb = make_sandbox(seed())
    admin = sb.state.users[sb.state.admin_id]
    admin["display_id"] = "DEVU-1\x1b]0;pwned\x07\x1b[2J\x9b31m\u202egnp.exe"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", sb.base_url)

    code = merge_contacts.main(["--check", "--log-dir", str(tmp_path / "logs"), "--report-dir",
                                str(tmp_path / "reports")])

    out, err = capfd.readouterr()
    assert code == ExitCode.OK, err
    assert "DEVU-1\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202egnp.exe" in out
    printed = (out + err).encode("utf-8")
    assert ESC not in printed and b"\x07" not in printed and "\x9b".encode() not in printed
    assert "\u202e".encode() not in printed
    logs = b"".join((tmp_path / "logs" / name).read_bytes() for name in os.listdir(tmp_path / "logs"))
    assert ESC not in logs


# --------------------------------------------------------------------------- core dumps
SCRIPTS = ["merge_contacts", "restore_contacts", "find_duplicates", "create_test_sample", "verify_backups",
           "approve_plan"]
_CORE_PROGRAM = ("import resource, sys\n"
                 "soft, hard = resource.getrlimit(resource.RLIMIT_CORE)\n"
                 "if hard == 0:\n"
                 "    print('skip: core dumps were off for good before the script ran')\n"
                 "    sys.exit(0)\n"
                 "top = hard if hard != resource.RLIM_INFINITY else 1 << 30\n"
                 "resource.setrlimit(resource.RLIMIT_CORE, (top, hard))\n"
                 "import {name}\n"
                 "{name}.main(['--version'])\n"
                 "print('core', *resource.getrlimit(resource.RLIMIT_CORE))\n")


def _start_core_probes() -> dict[str, subprocess.Popen]:
    """Started when this module is collected, before any test: the first script main() run in
    this process turns core dumps off for good (hard limit 0, inherited by every child), and a
    probe started after that could prove nothing. Reaped at exit if the test does not run."""
    import atexit
    procs = {name: subprocess.Popen([sys.executable, "-c", _CORE_PROGRAM.format(name=name)], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in SCRIPTS}
    atexit.register(lambda: [proc.communicate() for proc in procs.values()])
    return procs


_CORE_PROBES = _start_core_probes()


def test_every_script_runs_without_core_dumps():
    results = {name: (proc.communicate(timeout=60), proc.returncode) for name, proc in _CORE_PROBES.items()}
    lasts = []
    for name, ((out, err), code) in results.items():
        assert code == 0, (name, err)
        lasts.append(out.splitlines()[-1])
    if all(last.startswith("skip:") for last in lasts):
        pytest.skip(lasts[0])
    assert lasts == ["core 0 0"] * len(SCRIPTS), dict(zip(SCRIPTS, lasts))


# --------------------------------------------------------------------------- where the token goes
def test_a_dotenv_pointing_outside_devrev_is_refused_before_any_connection(monkeypatch, tmp_path, capsys):
    """A .env sends the token to a host outside devrev.ai (which here resolves to a listener):
    one error line, exit 2, and the listener never hears from the tool."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVREV_BASE_URL", raising=False)
    monkeypatch.delenv("DEVREV_ALLOW_HOST", raising=False)
    monkeypatch.delenv("DEVREV_API_TOKEN", raising=False)
    resolve_to_loopback(monkeypatch, "api.devrev-support.example")
    with listener() as (port, seen):
        (tmp_path / ".env").write_text(f"DEVREV_API_TOKEN={TEST_TOKEN}\n"
                                       f"DEVREV_BASE_URL=https://api.devrev-support.example:{port}\n")
        (tmp_path / "backups" / "b1").mkdir(parents=True)   # a folder that does not verify: the restore goes on
        outcomes = []
        for run in (lambda: merge_contacts.main(["--check"]),
                    lambda: restore_contacts.main(["--preview", "--backup-dir", "backups"]),
                    lambda: find_duplicates.main(["--output", "found.csv"])):
            code = run()
            outcomes.append((code, [line for line in capsys.readouterr().err.splitlines() if "error" in line]))
    for code, errors in outcomes:
        assert code == ExitCode.USAGE
        assert len(errors) == 1 and errors[0].startswith("error: DEVREV_BASE_URL points at api.devrev-support.example")
        assert "DEVREV_ALLOW_HOST=api.devrev-support.example" in errors[0] and TEST_TOKEN not in errors[0]
    assert seen == []   # no connection at all: the token went nowhere


def test_a_dotenv_cannot_allow_a_host_itself(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("DEVREV_BASE_URL", "DEVREV_ALLOW_HOST", "DEVREV_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    resolve_to_loopback(monkeypatch, "evil.example")
    with listener() as (port, seen):
        (tmp_path / ".env").write_text(f"DEVREV_API_TOKEN={TEST_TOKEN}\nDEVREV_BASE_URL=https://evil.example:{port}\n"
                                       f"DEVREV_ALLOW_HOST=evil.example\n")
        code = merge_contacts.main(["--check"])
        err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.startswith("error: DEVREV_ALLOW_HOST is set in .env") and len(err.splitlines()) == 1
    assert seen == []


def test_the_environment_can_allow_a_host_and_the_first_line_names_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    env = {"DEVREV_API_TOKEN": TEST_TOKEN, "DEVREV_BASE_URL": "https://devrev.proxy.example",
           "DEVREV_ALLOW_HOST": "other.example, devrev.proxy.example"}
    assert DevRevClient.check_env(env) == (TEST_TOKEN, "https://devrev.proxy.example")
    assert DevRevClient.check_env({"DEVREV_API_TOKEN": TEST_TOKEN,
                                   "DEVREV_BASE_URL": "https://api.us-east-1.devrev.ai"})[1].endswith("devrev.ai")


def test_every_script_that_calls_devrev_names_the_host_before_its_first_call(make_sandbox, monkeypatch, tmp_path,
                                                                            capsys):
    """On the console and, before the first call's line, in the log file."""
    sb = make_sandbox(seed())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVREV_API_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DEVREV_BASE_URL", sb.base_url)
    said = f"DevRev API: {urlsplit(sb.base_url).netloc} (a loopback address: the local emulator)"
    (tmp_path / "backups" / "b1").mkdir(parents=True)   # a folder that does not verify: the restore goes on
    runs = {"merge": lambda logs: merge_contacts.main(["--check", "--log-dir", logs, "--report-dir", "r"]),
            "restore": lambda logs: restore_contacts.main(["--preview", "--backup-dir", "backups", "--log-dir", logs,
                                                           "--report-dir", "r"]),
            "find": lambda logs: find_duplicates.main(["--output", "found.csv", "--log-dir", logs,
                                                       "--report-dir", "r"])}
    for name, run in runs.items():
        sb.clear_log()
        code = run(f"logs-{name}")
        err = capsys.readouterr().err
        assert any(line.endswith(said) for line in err.splitlines()), (name, code, err)
        log_lines = "".join(p.read_text() for p in (tmp_path / f"logs-{name}").iterdir()).splitlines()
        first_call = next((i for i, line in enumerate(log_lines) if " -> " in line), len(log_lines))
        assert any(line.endswith(said) for line in log_lines[:first_call]), (name, log_lines[:first_call + 1])
        assert first_call < len(log_lines) or not sb.api_calls(), name


@pytest.mark.parametrize("address, kind", [("64:ff9b::a00:1", "private"), ("64:ff9b:1::7f00:1", "loopback"),
                                           ("2002:c0a8:0101::1", "private"), ("::127.0.0.1", "loopback")])
def test_ipv6_forms_that_reach_an_inner_ipv4_address_are_refused(address, kind):
    """NAT64, 6to4 and IPv4-compatible addresses are judged as the IPv4 address they reach."""
    from devrev_api.config import address_refusal
    assert kind in (address_refusal(address, allow_loopback=False) or "")
    assert address_refusal("64:ff9b::5db8:d822", allow_loopback=False) is None   # a public IPv4 through NAT64
