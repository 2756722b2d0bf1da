"""Two processes on two "hosts": network namespaces joined by a veth pair, with
addresses of their own (10.x) that exist only inside them, made and removed here.

Each host has a name and an /etc/hosts of its own as Debian writes it: its own
name is 127.0.1.1, the other host's name its 10.x address. That is the case in
which gloo, left to itself, announces an address the other host cannot reach.
The job, started with the coordinator's name, must work anyway, equal one
process, and end every process with one line when a host is killed or the
network between them is cut. Needs root, iproute2's ``ip`` and util-linux's
``nsenter`` and ``unshare`` (.ci/run installs them).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_distributed import (GRID, clean_environ, dataset, finish, free_port,
                              reference_sweep, assert_same_sweep)

SUBNET = f"10.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}"  # one per test run
HEARTBEAT = "4"


class Hosts:
    """Two namespaces, ``a`` (SUBNET.1, where process 0 runs) and ``b`` (SUBNET.2),
    with host names ``hostnames[host]`` and /etc/hosts files in ``folder``."""

    def __init__(self, folder: Path):
        tag = f"jx{os.getpid()}"
        self.names = {"a": f"{tag}a", "b": f"{tag}b"}
        self.links = {"a": f"{tag}va", "b": f"{tag}vb"}
        self.addresses = {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2"}
        self.hostnames = {"a": f"jaxnet-test-{tag}-a", "b": f"jaxnet-test-{tag}-b"}
        self.etc_hosts = {}
        for host, other in (("a", "b"), ("b", "a")):
            self.etc_hosts[host] = folder / f"hosts-{host}"
            self.etc_hosts[host].write_text(
                f"127.0.0.1 localhost\n127.0.1.1 {self.hostnames[host]}\n"
                f"{self.addresses[other]} {self.hostnames[other]}\n")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def up(self) -> "Hosts":
        for name in self.names.values():
            self.ip("netns", "add", name)
        self.ip("link", "add", self.links["a"], "netns", self.names["a"], "type", "veth",
                "peer", "name", self.links["b"], "netns", self.names["b"])
        for host, name in self.names.items():
            self.ip("-n", name, "addr", "add", f"{self.addresses[host]}/24", "dev",
                    self.links[host])
            self.ip("-n", name, "link", "set", self.links[host], "up")
            self.ip("-n", name, "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def cut(self) -> None:
        """The network between the hosts fails: host b's link goes down."""
        self.ip("-n", self.names["b"], "link", "set", self.links["b"], "down")

    def run_in(self, host: str) -> list[str]:
        """The command prefix that runs a program on ``host``, with its name and its
        /etc/hosts. (``nsenter --net`` rather than ``ip netns exec``, which remounts
        /sys.)"""
        return ["nsenter", f"--net=/run/netns/{self.names[host]}", "unshare", "--uts",
                "--mount", "sh", "-c", f"mount --bind {self.etc_hosts[host]} /etc/hosts && "
                f"hostname {self.hostnames[host]} && exec \"$@\"", "sh"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    missing = [tool for tool in ("ip", "nsenter", "unshare") if shutil.which(tool) is None]
    assert not missing, f"{', '.join(missing)} missing: .ci/run installs iproute2 and util-linux"
    assert os.geteuid() == 0, "network namespaces need root (CI runs the tests as root)"
    made = Hosts(tmp_path_factory.mktemp("hosts"))
    try:
        yield made.up()
    finally:
        made.down()


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("rows") / "rows.npz", 40)


def start(hosts: Hosts, args: list, sweep_args: dict | None = None) -> list:
    """Process 0 on host a, process 1 on host b, joined at host a's name."""
    coordinator = f"{hosts.hostnames['a']}:{free_port()}"
    env = {**clean_environ(), "PYTHONUNBUFFERED": "1"}
    return [subprocess.Popen(
        [*hosts.run_in(host), sys.executable, str(REPO / "scripts" / "sweep.py"), *args,
         "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i),
         "--heartbeat-timeout", HEARTBEAT, "--join-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i, host in enumerate("ab")]


def running(processes: list, out) -> None:
    """Return once the job has saved progress (it is training), failing if it ended."""
    progress = out / "checkpoint" / "progress-none.npz"
    deadline = time.monotonic() + 180
    while not progress.exists() and time.monotonic() < deadline and all(
            p.poll() is None for p in processes):
        time.sleep(0.05)
    assert progress.exists(), finish(processes)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_two_hosts_sweep_equals_one_process(hosts, rows, tmp_path):
    out = tmp_path / "out"
    ended = finish(start(hosts, GRID + ["--num-iters", "200", "--data", str(rows),
                                        "--out", str(out)]))
    assert [status for status, _, _ in ended] == [0, 0], [e for _, _, e in ended]
    assert "6 configs in 2 groups on 2 cpu device(s) of 2 processes" in ended[1][2]
    assert_same_sweep(out, reference_sweep(rows, 200))


LONG = GRID + ["--num-iters", "3000", "--checkpoint-every", "1e-9"]


def test_a_killed_host_ends_the_other_in_one_line(hosts, rows, tmp_path):
    out = tmp_path / "out"
    processes = start(hosts, LONG + ["--data", str(rows), "--out", str(out)])
    running(processes, out)
    processes[1].send_signal(signal.SIGKILL)
    (status, _, stderr), _ = finish(processes, timeout=60)
    assert status == 3, stderr
    assert error_lines(stderr) == [line for line in stderr.splitlines() if line.strip()][-1:]
    # Its next collective fails, or, in a longer chunk, the killed process's heartbeat
    # stops first.
    assert error_lines(stderr)[0].startswith((
        "error: process 0 lost contact with the other processes of the job (",
        f"error: process 0 heard nothing from process(es) 1 for {HEARTBEAT} s "
        f"(--heartbeat-timeout): killed, host down, network cut or stalled.")), stderr
    assert "--resume OUT" in stderr and "Traceback" not in stderr


def test_a_network_cut_ends_both_hosts_in_one_line_each(hosts, rows, tmp_path):
    out = tmp_path / "out"
    processes = start(hosts, LONG + ["--data", str(rows), "--out", str(out)])
    running(processes, out)
    hosts.cut()
    try:
        ended = finish(processes, timeout=60)
    finally:
        hosts.ip("-n", hosts.names["b"], "link", "set", hosts.links["b"], "up")
    assert [status for status, _, _ in ended] == [3, 3], [e for _, _, e in ended]
    expected = [f"error: process 0 heard nothing from process(es) 1 for {HEARTBEAT} s "
                f"(--heartbeat-timeout): killed, host down, network cut or stalled.",
                f"error: process 1 heard nothing from process 0, the job's coordinator, for "
                f"{HEARTBEAT} s (--heartbeat-timeout): killed, host down, network cut or stalled."]
    for (_, _, stderr), start_of_line in zip(ended, expected):
        lines = error_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith(start_of_line), stderr
        assert "--resume OUT" in lines[0]
        assert "Traceback" not in stderr and "Check failure" not in stderr


REFUSE_WITHOUT_GLOO_ADDRESS = """
import sys
from jaxnet import gloo_address
from jaxnet.commands import sweep
gloo_address.use_route_to_coordinator = lambda: False  # as on a JAX without the hook
sys.argv[0] = "sweep.py"
sweep.main()
"""


def test_a_loopback_host_name_is_refused_before_joining_without_the_gloo_address(
        hosts, rows, tmp_path):
    """Where gloo's address cannot be chosen (another JAX), a host whose name resolves
    to 127.0.0.1 is refused in one line, before joining, not told to resume."""
    done = subprocess.run(
        [*hosts.run_in("b"), sys.executable, "-c", REFUSE_WITHOUT_GLOO_ADDRESS, *GRID,
         "--data", str(rows), "--out", str(tmp_path / "out"), "--coordinator",
         f"{hosts.hostnames['a']}:{free_port()}", "--num-processes", "2", "--process-id",
         "1"], capture_output=True, text=True, timeout=60, env=clean_environ(), cwd=REPO)
    assert done.returncode == 2
    name = hosts.hostnames["b"]
    assert done.stderr == (
        f"error: this host's name {name} resolves to 127.0.1.1, a loopback address, which "
        f"the other hosts of the job cannot reach: map {name} to this host's address on "
        f"the network (in /etc/hosts or DNS: {hosts.addresses['b']} {name}), then start "
        f"every process again\n")


def test_this_jax_lets_gloo_announce_the_route_to_the_coordinator():
    """The private hook of gloo_address exists in this JAX (without it, separate hosts
    whose names resolve to loopback addresses are refused instead of joined)."""
    done = subprocess.run(
        [sys.executable, "-c", "from jaxnet import gloo_address as g; "
         "print(g.use_route_to_coordinator(), g.local_address_towards('127.0.0.1'))"],
        capture_output=True, text=True, timeout=60, env=clean_environ(), cwd=REPO)
    assert done.stdout == "True 127.0.0.1\n", done.stderr
