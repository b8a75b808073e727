"""Remote control through real OpenSSH servers on loopback (tests/sshd.py): three hosts h1, h2, h3."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.protocol import rundir
from engine.config import Host, load_config
from lenstui.fleet import Fleet, FleetError
from lenstui.transport.base import AuthError, HostKeyError, TransportError
from lenstui.transport.ssh import SshTransport
from lenstui.transport.trust import scan_host_key
from sshd import PROJECT_ROOT, STANDIN_TRAIN, group_alive, keygen, ssh_lab, wait_for  # noqa: F401 (fixture)
from status_servers import OLD_STATUS, status_servers

pytestmark = pytest.mark.ssh
ECHO = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]


@pytest.fixture
def lab_fleet(ssh_lab, tmp_path):
    config = ssh_lab.write_config(tmp_path / "experiments.toml", tmp_path / "local-runs")
    fleet = Fleet(load_config(config), config, ssh_options=ssh_lab.options())
    yield ssh_lab, fleet, config
    fleet.close()
    for server in ssh_lab.servers.values():  # no stand-in outlives its test
        for d in server.runs_root.glob("*"):
            pgid = (rundir.read_run_info(d).data or {}).get("pgid")
            if pgid and group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)


def install_standin(work_dir: Path) -> None:
    (work_dir / "engine" / "train.py").write_text(STANDIN_TRAIN)


def ssh_fingerprint(pub_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub_key)], capture_output=True, text=True, check=True).stdout
    return re.search(r"SHA256:\S+", out).group(0)


def test_sync_launch_status_logs_abort_and_fetch_through_sshd(lab_fleet, tmp_path):
    lab, fleet, _ = lab_fleet
    h1 = lab.servers["h1"]
    synced = fleet.sync("h1")
    assert any(p.endswith("/engine/config.py") for p in synced.sent)
    assert (h1.work_dir / "experiments.toml").exists()
    assert json.loads((h1.work_dir / "engine" / "code_version.json").read_text())["code_version"] == synced.code_version
    assert [p for p in fleet.sync("h1").sent if not p.endswith("code_version.json")] == []  # nothing changed
    install_standin(h1.work_dir)

    result = fleet.launch("A1", "h1", extra_args=["--epoch-seconds", "0.1"])
    assert result.run_dir == f"{h1.runs_root}/A1"
    entry = wait_for(lambda: (e := (fleet.poll("h1").status or {}).get("runs", {}).get("A1")) and e["epoch"] and e,
                     timeout=30)
    assert entry["state"] == "running" and entry["pgid"] == result.pgid and entry["history"]
    with pytest.raises(FleetError, match="already running") as err:
        fleet.launch("A1", "h1")
    assert err.value.code == 3
    assert "lenstui launch of A1 on" in fleet.logs("A1", "h1")

    grandchild = int((h1.runs_root / "A1" / "grandchild.pid").read_text())
    aborted = fleet.abort("A1", "h1", grace=10)
    assert aborted.signalled and aborted.remaining == []
    assert group_alive(result.pgid) == [] and rundir.process_identity(grandchild) is None

    dest = fleet.fetch("A1", "h1", tmp_path / "fetched")
    assert json.loads((dest / "metrics.json").read_text())["status"] == "aborted"
    assert "stand-in: aborted" in (dest / "stdout.log").read_text()


def test_a_host_without_the_engine_is_told_to_sync(lab_fleet, tmp_path):
    lab, _, config = lab_fleet
    # -S: no site-packages, so nothing but the work_dir could provide `engine` (as on a fresh host)
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    h2 = lab.servers["h2"]
    config.write_text(config.read_text().replace(
        f'work_dir = "{h2.work_dir}"\npython = "{sys.executable}"', f'work_dir = "{h2.work_dir}"\npython = "{bare}"'))
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        snap = fleet.poll("h2")
        assert snap.connected and snap.status is None
        assert f"not installed in {h2.work_dir}" in snap.error and "lenstui sync --host h2" in snap.error
        fleet.sync("h2")
        assert fleet.poll("h2").error is None  # engine.status needs nothing beyond the standard library
    finally:
        fleet.close()


def test_a_host_whose_sshd_offers_no_sftp_is_told_what_to_add_not_that_the_channel_closed(lab_fleet):
    # Seen on a hand-made sshd: `lenstui sync` said only "upload: Channel closed."
    lab, fleet, _ = lab_fleet
    h3 = lab.servers["h3"]
    original = h3.config.read_text()
    h3.config.write_text(original.replace("Subsystem sftp internal-sftp\n", ""))
    h3.restart()
    try:
        with pytest.raises((FleetError, TransportError)) as err:
            fleet.sync("h3")
        assert "would not start SFTP" in str(err.value) and "Subsystem sftp" in str(err.value), str(err.value)
        assert fleet.poll("h3").connected, "the link itself is fine: the host is not declared dead"
    finally:
        h3.config.write_text(original)
        h3.restart()


def test_arguments_and_paths_never_run_as_shell_on_the_host(lab_fleet, tmp_path):
    lab, fleet, config = lab_fleet
    mark = tmp_path / "pwned"
    nasty = [f"$(touch {mark}1)", f"; touch {mark}2", f"`touch {mark}3`", "a'b\"c", f"| touch {mark}4", "*", "~"]
    odd_dir = tmp_path / "dir $(touch x) ; rm -rf y"
    odd_dir.mkdir()
    t = fleet.transport("h2")
    done = t.run([*ECHO, *nasty], cwd=str(odd_dir), timeout=30)
    assert done.rc == 0 and json.loads(done.stdout) == nasty
    with pytest.raises(ValueError, match="newline"):
        t.run([*ECHO, "x\ntouch y"], timeout=30)
    # A runs_root with shell syntax in it is just a strange folder name.
    h2 = lab.servers["h2"]
    text = config.read_text().replace(f'runs_root = "{h2.runs_root}"', f'runs_root = "{h2.root}/runs $(touch {mark}5); touch {mark}6"')
    config.write_text(text)
    odd = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        odd.sync("h2")
        install_standin(h2.work_dir)
        with pytest.raises(FleetError) as refused:   # the stand-in takes no such argument: it says so, literally
            odd.launch("B1", "h2", extra_args=["--epochs", "1", "--epoch-seconds", "0", f"$(touch {mark}7)"])
        assert f"unrecognized arguments: $(touch {mark}7)" in refused.value.message
        odd.launch("B1", "h2", extra_args=["--epochs", "1", "--epoch-seconds", "0"])
        snap = wait_for(lambda: (s := odd.poll("h2")).status and s.status["runs"].get("B1") and s, timeout=30)
        assert snap.error is None and snap.status["runs_root"] == odd.paths("h2").runs_root
        assert odd.paths("h2").runs_root.endswith(f"/runs $(touch {mark}5); touch {mark}6")
    finally:
        odd.close()
    assert not list(tmp_path.glob("pwned*"))


def test_an_unknown_host_key_is_refused_with_its_fingerprint_until_trusted(lab_fleet):
    lab, _, config = lab_fleet
    lab.known_hosts.write_text("")
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        snap = fleet.poll("h1")
    finally:
        fleet.close()
    expected = ssh_fingerprint(lab.servers["h1"].host_key.with_suffix(".pub"))
    assert not snap.connected and snap.configured and snap.since is not None
    assert "unknown" in snap.error and expected in snap.error and "lenstui trust h1" in snap.error

    trusted = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "trust", "h1", "--yes"],
                             env=lab.env(), capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert trusted.returncode == 0, trusted.stderr
    assert expected in trusted.stdout
    assert lab.known_hosts.read_text().startswith(f"[127.0.0.1]:{lab.servers['h1'].port} ssh-ed25519 ")
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        assert fleet.poll("h1").connected
        assert not fleet.poll("h2").connected  # trusting one host trusts nothing else
    finally:
        fleet.close()


def test_a_changed_host_key_is_refused_and_trust_will_not_overwrite_it(lab_fleet):
    lab, _, config = lab_fleet
    h1, h2 = lab.servers["h1"], lab.servers["h2"]
    impostor = h2.known_hosts_line.replace(f"]:{h2.port} ", f"]:{h1.port} ")  # h1's name, h2's key
    lab.known_hosts.write_text(impostor + "\n")
    t = SshTransport(load_config(config).host("h1"), lab.options())
    with pytest.raises(HostKeyError) as err:
        t.run(["true"], timeout=10)
    t.close()
    message = str(err.value)
    assert "CHANGED" in message and ssh_fingerprint(h1.host_key.with_suffix(".pub")) in message
    assert ssh_fingerprint(h2.host_key.with_suffix(".pub")) in message and "ssh-keygen -R" in message
    refused = subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), "trust", "h1", "--yes"],
                             env=lab.env(), capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert refused.returncode == 3 and "ssh-keygen -R" in refused.stderr
    assert lab.known_hosts.read_text() == impostor + "\n"


def test_refused_credentials_say_which_keys_were_tried(lab_fleet, tmp_path):
    lab, _, _ = lab_fleet
    stranger = tmp_path / "stranger_key"
    keygen(stranger)
    host = Host("h1", "ssh", True, ".", "python3", "runs", "lab", ssh_host="h1", identity_file=str(stranger))
    options = lab.options()
    config_text = lab.ssh_config.read_text().replace(str(lab.client_key), str(stranger))
    (tmp_path / "ssh_config").write_text(config_text)
    from dataclasses import replace
    t = SshTransport(host, replace(options, ssh_config=tmp_path / "ssh_config"))
    with pytest.raises(AuthError, match="refused our credentials") as err:
        t.run(["true"], timeout=10)
    assert str(stranger) in str(err.value)


def test_proxyjump_reaches_a_host_through_a_gateway(lab_fleet):
    lab, _, _ = lab_fleet
    h1, h3 = lab.servers["h1"], lab.servers["h3"]
    with lab.ssh_config.open("a") as f:
        f.write(f"Host h3-via-h1\n  HostName 127.0.0.1\n  Port {h3.port}\n  User {lab.user}\n"
                f"  IdentityFile {lab.client_key}\n  IdentitiesOnly yes\n  ProxyJump h1\n")
    t = SshTransport(Host("far", "ssh", True, ".", "python3", "runs", "lab", ssh_host="h3-via-h1"), lab.options())
    try:
        done = t.run(["sh", "-c", "echo $SSH_CONNECTION"], timeout=30)
        assert done.rc == 0 and done.stdout.split()[2:4] == ["127.0.0.1", str(h3.port)]
        assert len(t._gateways) == 1
        assert re.search(r"Accepted publickey", h1.log.read_text())
    finally:
        t.close()


def test_proxycommand_reaches_a_host_through_ssh_w_and_leaves_no_process_behind(lab_fleet):
    lab, _, _ = lab_fleet
    h1, h3 = lab.servers["h1"], lab.servers["h3"]
    # What a bastion's users write: OpenSSH's client relaying stdin/stdout to %h:%p from h1 (-W).
    relay = (f"ssh -F /dev/null -i {lab.client_key} -o IdentitiesOnly=yes -o BatchMode=yes "
             f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes -p {h1.port} "
             f"-W %h:%p {lab.user}@127.0.0.1")
    with lab.ssh_config.open("a") as f:
        f.write(f"Host h3-via-command\n  HostName 127.0.0.1\n  Port {h3.port}\n  User {lab.user}\n"
                f"  IdentityFile {lab.client_key}\n  IdentitiesOnly yes\n  ProxyCommand {relay}\n")
    host = Host("far", "ssh", True, ".", "python3", "runs", "lab", ssh_host="h3-via-command")
    logins_on_h1 = len(re.findall(r"Accepted publickey", h1.log.read_text()))
    t = SshTransport(host, lab.options())
    try:
        done = t.run(["sh", "-c", "echo $SSH_CONNECTION"], timeout=30)
        assert done.rc == 0 and done.stdout.split()[2:4] == ["127.0.0.1", str(h3.port)]
        (link,) = t._gateways
        assert link.process.poll() is None, "the relay carries the connection"
        assert len(re.findall(r"Accepted publickey", h1.log.read_text())) == logins_on_h1 + 1, "through h1"
    finally:
        t.close()
    assert link.process.returncode is not None, "closing the transport stops and reaps the relay"
    assert not Path(f"/proc/{link.process.pid}").exists()
    assert scan_host_key(host, lab.options()).state == "known", "`lenstui trust` goes through it too"


def test_a_failing_proxycommand_says_what_the_command_said(lab_fleet):
    lab, _, _ = lab_fleet
    h3 = lab.servers["h3"]
    commands = {"dies": 'sh -c "echo no route to bastion.example >&2; exit 3"',
                "missing": "no-such-proxy-program %h %p",
                "both": "ssh -W %h:%p h1\n  ProxyJump h1"}
    with lab.ssh_config.open("a") as f:
        for alias, command in commands.items():
            f.write(f"Host {alias}\n  HostName 127.0.0.1\n  Port {h3.port}\n  ProxyCommand {command}\n")

    def error(alias: str) -> str:
        t = SshTransport(Host(alias, "ssh", True, ".", "python3", "runs", "lab", ssh_host=alias),
                         lab.options(connect_timeout=5.0))
        try:
            with pytest.raises(TransportError) as err:
                t.run(["true"], timeout=10)
            return str(err.value)
        finally:
            t.close()

    assert "exited 3 saying: no route to bastion.example" in error("dies")
    assert "cannot start ProxyCommand 'no-such-proxy-program 127.0.0.1 " in error("missing")
    assert "both ProxyJump (h1) and ProxyCommand (ssh -W 127.0.0.1:" in error("both")


def test_a_dead_host_turns_disconnected_within_15s_while_others_keep_updating_and_it_comes_back(lab_fleet):
    lab, fleet, _ = lab_fleet
    for name in ("h1", "h2", "h3"):
        fleet.sync(name)
    seen: dict[str, list[tuple[float, object]]] = {n: [] for n in ("h1", "h2", "h3")}
    stop = threading.Event()

    def poller(name: str) -> None:  # what the app does: one worker per host, a poll every second
        while not stop.is_set():
            seen[name].append((time.monotonic(), fleet.poll(name)))
            stop.wait(1.0)

    threads = [threading.Thread(target=poller, args=(n,), daemon=True) for n in seen]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(s and s[-1][1].connected and s[-1][1].status for s in seen.values()), timeout=30)
        frozen_at = time.monotonic()
        lab.servers["h2"].freeze()  # no FIN, no RST: only silence, as when a network path dies
        down = wait_for(lambda: next((s for t, s in seen["h2"] if t > frozen_at and not s.connected), None),
                        timeout=25)
        noticed = time.monotonic() - frozen_at
        print(f"h2 frozen: disconnected after {noticed:.1f} s")
        assert noticed < 15, f"took {noticed:.1f} s"
        assert down.since is not None and "h2" in down.error
        for other in ("h1", "h3"):  # kept updating meanwhile
            fresh = [s for t, s in seen[other] if t > frozen_at and s.connected and s.status]
            assert len(fresh) >= 3 and fresh[-1].status["time"] > fresh[0].status["time"]

        lab.servers["h2"].restart()  # the host returns: same port, same key
        back_at = time.monotonic()
        wait_for(lambda: any(t > back_at and s.connected and s.status for t, s in seen["h2"]), timeout=20)
        print(f"h2 restarted: connected again after {time.monotonic() - back_at:.1f} s")
        assert time.monotonic() - back_at < 15
        # The status server of the frozen connection ended with it; one new one serves h2.
        wait_for(lambda: len(status_servers(lab.servers["h2"].runs_root)) == 1, timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def _done_run(runs: Path, exp: str, epochs: int) -> None:
    (runs / exp).mkdir(parents=True, exist_ok=True)
    m = rundir.new_metrics(exp, 50, {})
    m["status"] = "done"
    m["history"] = [{"epoch": e, "val_auroc": 0.7 + 0.01 * e} for e in range(epochs)]
    rundir.write_metrics(runs / exp, m)


def test_one_status_server_per_host_answers_every_poll_and_ends_with_its_connection(lab_fleet):
    lab, fleet, _ = lab_fleet
    h1 = lab.servers["h1"]
    fleet.sync("h1")
    _done_run(h1.runs_root, "A1", 3)
    for epochs in (3, 3, 4):   # every poll is a fresh answer: a new epoch shows at the next poll
        _done_run(h1.runs_root, "A1", epochs)
        snap = fleet.poll("h1")
        assert snap.error is None and [r["epoch"] for r in snap.status["runs"]["A1"]["history"]] == list(range(epochs))
    (pid,) = status_servers(h1.runs_root)   # one server, started once, for all three polls

    h1.stop()   # sshd dies with its sessions: the server notices the end of its input and exits
    wait_for(lambda: status_servers(h1.runs_root) == [], timeout=10)
    assert not fleet.poll("h1").connected
    h1.start()
    snap = wait_for(lambda: (s := fleet.poll("h1")).status and s, timeout=20)
    assert snap.error is None and len(snap.status["runs"]["A1"]["history"]) == 4
    (again,) = status_servers(h1.runs_root)
    assert again != pid
    fleet.close()   # the app or the CLI closes: so do its servers
    wait_for(lambda: status_servers(h1.runs_root) == [], timeout=10)


CLIENT = r'''
import sys, time
from pathlib import Path
from engine.config import load_config
from lenstui.fleet import Fleet
from lenstui.transport import SshOptions

config, ssh_config, known_hosts = map(Path, sys.argv[1:4])
fleet = Fleet(load_config(config), config, local_status_in_process=False,
              ssh_options=SshOptions(ssh_config=ssh_config, known_hosts=known_hosts, system_known_hosts=None))
for host in ("local", "h1"):
    assert fleet.poll(host).error is None, host
print("polled", flush=True)
time.sleep(120)
'''


def test_a_client_killed_outright_leaves_no_status_server_behind(lab_fleet, tmp_path):
    lab, fleet, config = lab_fleet
    h1 = lab.servers["h1"]
    fleet.sync("h1")
    fleet.close()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen([sys.executable, str(script), str(config), str(lab.ssh_config), str(lab.known_hosts)],
                              cwd=PROJECT_ROOT, env={**lab.env(), "PYTHONPATH": str(PROJECT_ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline() == "polled\n", client.stderr.read()
        local_runs = tmp_path / "local-runs"
        assert len(status_servers(local_runs)) == 1 and len(status_servers(h1.runs_root)) == 1
        client.kill()   # no close, no goodbye: the pipe and the TCP connection just end
        client.wait()
        wait_for(lambda: status_servers(local_runs) == [] and status_servers(h1.runs_root) == [], timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


# Every module engine/ had before it was grouped in layers, that is not a command name today.
FLAT_ENGINE = ("rundir.py", "runlog.py", "train_options.py", "verdicts.py", "decision.py", "representative.py",
               "datasettings.py", "cachedir.py", "shards.py", "manifest_import.py", "stampcache.py", "preprocess.py",
               "data.py", "physics.py", "model.py", "resnet.py", "augment.py", "device.py", "step.py")


def test_an_old_host_told_to_sync_loses_the_modules_that_moved_and_runs_the_new_code(lab_fleet):
    """A host synced before engine/ had its layers keeps flat modules (engine/verdicts.py beside the new
    engine/results/) unless sync removes them: it does, under engine/ only, and the host runs the new code."""
    from engine import ENGINE_VERSION

    lab, fleet, _ = lab_fleet
    h2 = lab.servers["h2"]
    engine = h2.work_dir / "engine"
    engine.mkdir(parents=True, exist_ok=True)
    for name in FLAT_ENGINE:
        (engine / name).write_text(f"raise ImportError('the old engine/{name} was imported')\n")
    (engine / "__init__.py").write_text('ENGINE_VERSION = "0.2.0"\n')
    (engine / "status.py").write_text(OLD_STATUS)   # the old probe, from before --serve
    (h2.work_dir / "keep.txt").write_text("the user's own file\n")
    assert "h2 runs engine 0.2.0" in (fleet.poll("h2").error or ""), "the old engine answers first"

    synced = fleet.sync("h2")
    assert sorted(Path(p).name for p in synced.removed) == sorted(FLAT_ENGINE)
    assert [n for n in FLAT_ENGINE if (engine / n).exists()] == []
    assert (h2.work_dir / "keep.txt").read_text() == "the user's own file\n"
    assert (engine / "results" / "verdicts.py").exists() and (engine / "code_version.json").exists()
    snap = fleet.poll("h2")
    assert snap.error is None and snap.status["engine_version"] == ENGINE_VERSION and snap.status["host"] != "old"
    probe = ("import importlib.util as u; "
             "print([u.find_spec(m) is None for m in ('engine.verdicts', 'engine.rundir', 'engine.data.load')])")
    done = fleet.transport("h2").run([sys.executable, "-c", probe], cwd=str(h2.work_dir), timeout=60)
    assert done.stdout.strip() == "[True, True, False]", done.stderr
    assert fleet.sync("h2").removed == []


def test_a_host_whose_engine_has_no_serve_is_polled_the_old_way_and_told_to_sync(lab_fleet):
    lab, fleet, _ = lab_fleet
    h3 = lab.servers["h3"]
    fleet.sync("h3")
    (h3.work_dir / "engine" / "status.py").write_text(OLD_STATUS)   # as synced before --serve existed
    init = h3.work_dir / "engine" / "__init__.py"
    init.write_text(init.read_text().replace('ENGINE_VERSION = "', 'ENGINE_VERSION = "0.0.1"  # was "'))
    started = time.monotonic()
    snap = fleet.poll("h3")
    print(f"old engine answered in {time.monotonic() - started:.1f} s")
    assert snap.connected and snap.status["host"] == "old", snap.error
    assert "h3 runs engine 0.0.1" in snap.error and "run `lenstui sync --host h3`" in snap.error
    assert status_servers(h3.runs_root) == []
    fleet.sync("h3")
    snap = fleet.poll("h3")
    assert snap.error is None and snap.status["host"] != "old" and len(status_servers(h3.runs_root)) == 1


def test_an_exec_request_the_host_never_answers_is_a_dead_link_not_a_hang(lab_fleet):
    from lenstui.transport.base import HostUnreachable

    lab, fleet, _ = lab_fleet
    t = fleet.transport("h1")
    t.connect()
    client = t._client
    chan = t._session(client)      # the channel opened; then the host stops answering (paramiko itself
    lab.servers["h1"].freeze()     # would wait for the exec reply for ever)
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="no reply to a command request"):
            t._exec(client, chan, "true")
        assert time.monotonic() - started < 15
        assert not t.is_connected
    finally:
        lab.servers["h1"].thaw()


def test_two_launches_at_the_same_instant_from_two_connections_start_one_run(lab_fleet):
    lab, fleet, config = lab_fleet
    fleet.sync("h3")
    install_standin(lab.servers["h3"].work_dir)
    other = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        fleet.poll("h3"), other.poll("h3")  # both connected before the race
        barrier, outcomes = threading.Barrier(2), []

        def go(f: Fleet) -> None:
            barrier.wait()
            try:
                outcomes.append(f.launch("B4", "h3"))
            except FleetError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=go, args=(f,)) for f in (fleet, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    started = [o for o in outcomes if not isinstance(o, FleetError)]
    refused = [o for o in outcomes if isinstance(o, FleetError)]
    assert len(started) == 1 and len(refused) == 1 and refused[0].code == 3
    fleet.abort("B4", "h3", grace=5)
    assert group_alive(started[0].pgid) == []


def test_a_disabled_host_is_not_configured_rather_than_an_error(lab_fleet):
    lab, _, config = lab_fleet
    config.write_text(config.read_text().replace('[hosts.h3]\n', '[hosts.h3]\nenabled = false\n'))
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    snap = fleet.poll("h3")
    assert (snap.configured, snap.connected, snap.error) == (False, False, None)
    with pytest.raises(FleetError, match="not configured"):
        fleet.launch("A1", "h3")


# -- real training, once engine/training/train.py exists ------------------------------------------


TINY = {"gate_every_epochs": 1, "gate_n_samples": 40, "thetae_min_positives": 3, "batch_size": 32,
        "sample_fraction": 1.0}


@pytest.mark.slow
@pytest.mark.skipif(not (PROJECT_ROOT / "engine" / "train.py").exists(), reason="engine/train.py not written yet")
def test_a_real_tiny_training_run_through_sshd(lab_fleet, tmp_path):
    from engine.synthetic.twin import write_dataset

    lab, _, config = lab_fleet
    h1 = lab.servers["h1"]
    write_dataset(tmp_path / "synth", rows={"train": 96, "val": 96, "test": 96}, seed=42)
    text = config.read_text().replace('root = "data/none"', f'root = "{tmp_path / "synth"}"')
    for key, value in TINY.items():
        text, n = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert n == 1, key
    # One thread, as every training test here: the host's "python" is a wrapper that says so.
    wrapper = tmp_path / "python1"
    wrapper.write_text(f"#!/bin/sh\nOMP_NUM_THREADS=1 MKL_NUM_THREADS=1 exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    text = text.replace(f'[hosts.h1]\ntransport = "ssh"\nssh_host = "h1"\nwork_dir = "{h1.work_dir}"\npython = "{sys.executable}"',
                        f'[hosts.h1]\ntransport = "ssh"\nssh_host = "h1"\nwork_dir = "{h1.work_dir}"\npython = "{wrapper}"')
    config.write_text(text)
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        fleet.sync("h1")
        launched = fleet.launch("A1", "h1", extra_args=["--epochs", "2", "--limit-train", "64", "--limit-val", "64"])

        def finished():
            entry = (fleet.poll("h1").status or {}).get("runs", {}).get("A1") or {}
            return entry if entry.get("state") in ("done", "failed", "lost") else None
        entry = wait_for(finished, timeout=280, interval=1.0)
        log = fleet.logs("A1", "h1")
        assert entry["state"] == "done", log
        assert [row["epoch"] for row in entry["history"]] == [1, 2]
        assert entry["gates"] and entry["run"]["code_version"].startswith("git-"), "the version sync recorded"
        wait_for(lambda: group_alive(launched.pgid) == [], timeout=60)  # it exits after its last write
        dest = fleet.fetch("A1", "h1", tmp_path / "fetched")
        assert json.loads((dest / "metrics.json").read_text())["status"] == "done"
        # The cutout view's pixels come from the host the data is on, stretched there.
        shown = fleet.cutouts("B1", "h1", factor=2)
        assert [e["label"] for e in shown["examples"]] == [1, 1, 0, 0] and shown["preprocessing"] == "residual"
        assert len(shown["examples"][0]["raw"]) == 31 and len(shown["examples"][0]["raw"][0][0]) == 3
    finally:
        fleet.close()


# ---------------------------------------------------------------------------
# Onboarding a host (issue 15)


def cli(config, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenstui.cli", "--config", str(config), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL)


def test_before_the_first_sync_status_says_run_sync_and_exits_3(lab_fleet, tmp_path):
    lab, _, config = lab_fleet
    h2 = lab.servers["h2"]
    fresh = h2.root / "never-synced"
    config.write_text(config.read_text().replace(f'work_dir = "{h2.work_dir}"', f'work_dir = "{fresh}"'))
    done = cli(config, "status", "--host", "h2", env=lab.env())
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"h2: connected, but not ready: h2: its work_dir {fresh} does not exist yet" in done.stdout
    assert "run `lenstui sync --host h2`" in done.stdout
    assert cli(config, "sync", "--host", "h2", env=lab.env()).returncode == 0
    assert cli(config, "status", "--host", "h2", env=lab.env()).returncode == 0


def test_an_unknown_host_key_is_the_refused_exit_code_not_unreachable(lab_fleet):
    lab, _, config = lab_fleet
    lab.known_hosts.write_text("")
    for args in (["status", "--host", "h1"], ["sync", "--host", "h1"], ["preflight", "--host", "h1"]):
        done = cli(config, *args, env=lab.env())
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert "lenstui trust h1" in done.stdout + done.stderr
    lab.servers["h3"].stop()
    assert cli(config, "status", "--host", "h3", env=lab.env()).returncode == 4, "a host that is down stays 4"


def test_refused_credentials_say_where_the_user_came_from(lab_fleet):
    lab, _, config = lab_fleet
    host = Host("h1", "ssh", True, ".", "python3", "runs", "lab", ssh_host="h1", user="ubuntu")
    t = SshTransport(host, lab.options())
    try:
        with pytest.raises(AuthError) as err:
            t.run(["true"], timeout=10)
    finally:
        t.close()
    message = str(err.value)
    assert "ubuntu@127.0.0.1" in message
    assert "the `user` key of this host in experiments.toml, which wins over ~/.ssh/config" in message
    assert f"that says User {lab.user}: remove the `user` line to use it" in message


def test_a_host_without_its_dataset_is_offered_the_route_and_synth_makes_it_there(lab_fleet):
    lab, fleet, config = lab_fleet
    h1 = lab.servers["h1"]
    fleet.sync("h1")
    pre = fleet.preflight("h1")
    assert not pre.ok and f"{h1.work_dir}/data/none" in pre.message
    assert "make it there with `lenstui synth --host h1`" in pre.message
    done = cli(config, "synth", "--host", "h1", env=lab.env())
    assert done.returncode == 0, done.stderr
    assert (h1.work_dir / "data" / "none" / "train").is_dir() and "synth: wrote" in done.stdout
    assert fleet.preflight("h1").ok


def test_real_shards_elsewhere_on_a_host_take_a_data_root_there_not_a_second_dataset(lab_fleet, tmp_path):
    lab, _, config = lab_fleet
    h2 = lab.servers["h2"]
    text = config.read_text().replace('kind = "synthetic"', 'kind = "shards"')
    text = text.replace(f'[hosts.h2]\ntransport = "ssh"', f'[hosts.h2]\ndata_root = "{h2.root}/shards"\ntransport = "ssh"')
    config.write_text(text)
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        fleet.sync("h2")
        route = fleet.preflight("h2").message
        assert f"dataset root {h2.root}/shards does not exist" in route
        assert f"copy the shards of dataset 'lab' there, e.g. `rsync -a " in route and f"h2:{h2.root}/shards/`" in route
        (h2.root / "shards").mkdir()
        assert "dataset root" not in fleet.preflight("h2").message
        assert fleet.preflight("h1").message != fleet.preflight("h2").message   # h1 keeps the dataset's root
        with pytest.raises(FleetError, match="real shards: nothing to make") as err:
            fleet.synth("h2")
        assert err.value.code == 2
    finally:
        fleet.close()
