"""Hosts on a private LAN made of Linux network namespaces, for multi-host tests (needs root).

Each host is a network namespace whose one interface is a veth into a bridge (the switch) that
lives in a namespace of its own; one more veth links the switch to the namespace the tests run
in, so they reach the hosts as a client on the same LAN would. Nothing else is touched: the
LAN is a /24 no interface or route of this machine uses, every namespace and interface name
carries a random suffix, and Lan.close() kills what runs on the hosts and removes it all.

A host's processes (Lan.argv) also get a hostname of their own and a private, empty /tmp.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness import eventually

IP_TIMEOUT_S = 10
REPO = Path(__file__).resolve().parents[1]  # the checkout the tests run from


class NetnsUnavailable(RuntimeError):
    """This machine cannot make the namespaces (not root, no `ip`, a refusing kernel)."""


@dataclass(frozen=True)
class Host:
    """One machine on the LAN."""

    name: str
    netns: str
    address: str
    hostname: str
    nic: str
    """Its interface (in its namespace)."""
    port: str
    """The peer of `nic`: its port on the switch (in the switch's namespace)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and done.returncode:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable() -> str | None:
    """Why no LAN can be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "sh", "hostname", "mount"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    return None


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this namespace has an address or a route in."""
    used = []
    for line in (_ip("-4", "-o", "addr", "show").stdout.splitlines()
                 + _ip("-4", "route", "show", "table", "all").stdout.splitlines()):
        for word in line.split():
            try:
                network = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if isinstance(network, ipaddress.IPv4Network):
                used.append(network)
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    """A random private /24 that overlaps nothing this machine has an address or route in."""
    used = _networks_in_use()
    rng = random.SystemRandom()
    for _ in range(200):
        second, third = rng.randrange(64, 250), rng.randrange(1, 255)
        candidate = ipaddress.ip_network(f"10.{second}.{third}.0/24")
        if not any(candidate.overlaps(n) for n in used if n.prefixlen > 0):
            return candidate
    raise NetnsUnavailable("found no unused private /24")


class Lan:
    """Hosts (network namespaces) on one bridge, reachable from this namespace at `gateway`."""

    def __init__(self, names: Sequence[str]) -> None:
        self.suffix = uuid.uuid4().hex[:6]
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        self.gateway = str(addresses[0])  # this namespace's address on the LAN
        link = f"mh{self.suffix}"  # + 1-2 characters: well within IFNAMSIZ (15)
        self.switch = f"mh-{self.suffix}-lan"
        self.uplink, self.uplink_port = f"{link}r", f"{link}rs"
        self.hosts = {name: Host(name, f"mh-{self.suffix}-{name}", str(addresses[9 + i]),
                                 f"{name}-{self.suffix}", f"{link}{name}", f"{link}{name}s")
                      for i, name in enumerate(names)}
        self._made: list[str] = []  # namespaces created, for close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def up(self) -> Lan:
        """Create the switch, the hosts and the links; NetnsUnavailable if the kernel refuses."""
        try:
            for netns in (self.switch, *(h.netns for h in self.hosts.values())):
                _ip("netns", "add", netns)
                self._made.append(netns)
                _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")  # STP off: forwards
            _ip("-n", self.switch, "link", "set", "br0", "up")              # at once
            for host in self.hosts.values():
                _ip("-n", self.switch, "link", "add", host.port, "type", "veth",
                    "peer", "name", host.nic)
                _ip("-n", self.switch, "link", "set", host.nic, "netns", host.netns)
                _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.nic)
                _ip("-n", host.netns, "link", "set", host.nic, "up")
            _ip("-n", self.switch, "link", "add", self.uplink_port, "type", "veth",
                "peer", "name", self.uplink)
            _ip("-n", self.switch, "link", "set", self.uplink, "netns", str(os.getpid()))
            _ip("-n", self.switch, "link", "set", self.uplink_port, "master", "br0", "up")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.uplink)
            _ip("link", "set", self.uplink, "up")
            probe = subprocess.run(self.argv(next(iter(self.hosts)), ["true"]),
                                   capture_output=True, text=True, timeout=IP_TIMEOUT_S)
            if probe.returncode:
                raise NetnsUnavailable(f"no private /tmp and hostname: {probe.stderr.strip()}")
        except BaseException:
            try:
                self.close()
            except RuntimeError:
                pass  # the error that stopped `up` is the one to report
            raise
        return self

    def argv(self, name: str, argv: Sequence[str]) -> list[str]:
        """`argv` run on host `name`: its network, its hostname, a private empty /tmp.

        The one exception in /tmp is the code the tests run: a clone under /tmp (its
        virtualenv inside it), or else a virtualenv under /tmp. Every host has it, as every
        real host has /usr. It is bound back into the empty /tmp from the shell's working
        directory, which still is the original directory once the tmpfs hides its path
        (`mount -c`: no canonicalizing)."""
        host = self.hosts[name]
        script = 'mount -t tmpfs -o mode=1777 tmpfs /tmp && hostname "$0" && exec "$@"'
        keep = next((path for path in (REPO, Path(sys.prefix).resolve())
                     if path.is_relative_to("/tmp")), None)
        if keep is not None:
            prefix = shlex.quote(str(keep))
            script = (f'here="$(pwd)" && cd {prefix} && '
                      "mount -t tmpfs -o mode=1777 tmpfs /tmp && "
                      f'mkdir -p {prefix} && mount -c --bind . {prefix} && cd "$here" && '
                      'hostname "$0" && exec "$@"')
        return ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts",
                "--propagation", "private", "sh", "-c", script, host.hostname, *argv]

    def pids(self, name: str) -> list[int]:
        """Every process running on host `name`."""
        return [int(p) for p in _ip("netns", "pids", self.hosts[name].netns,
                                    check=False).stdout.split()]

    def unplug(self, name: str) -> None:
        """Pull host `name`'s cable: its switch port goes down, nothing more reaches it."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def plug(self, name: str) -> None:
        """Plug host `name`'s cable back in."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def kill(self, name: str, timeout: float = 10) -> int:
        """SIGKILL every process on host `name`, as a power cut would; returns how many."""
        killed: set[int] = set()

        def dead() -> bool:
            pids = self.pids(name)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            return not pids

        eventually(dead, timeout, interval=0.02, message=f"processes left on host {name}")
        return len(killed)

    def close(self) -> None:
        """Kill every process on the hosts and remove the namespaces, bridge and links."""
        errors = []
        for name, host in self.hosts.items():
            if host.netns in self._made:
                try:
                    self.kill(name)
                except (AssertionError, NetnsUnavailable, subprocess.SubprocessError) as exc:
                    errors.append(str(exc))
        _ip("link", "del", self.uplink, check=False)  # its peer on the switch goes with it
        for netns in reversed(self._made):
            done = _ip("netns", "del", netns, check=False)
            if done.returncode:
                errors.append(f"ip netns del {netns}: {done.stderr.strip()}")
        self._made.clear()

        def gone() -> bool:  # the kernel dismantles a namespace's interfaces asynchronously
            listed = _ip("netns", "list", check=False).stdout
            return (f"mh-{self.suffix}-" not in listed
                    and _ip("link", "show", self.uplink, check=False).returncode != 0)

        try:
            eventually(gone, IP_TIMEOUT_S, interval=0.05, message="the LAN is still there")
        except AssertionError as exc:
            errors.append(str(exc))
        if errors:
            raise RuntimeError("LAN cleanup: " + "; ".join(errors))

    def leftovers(self) -> str:
        """What of this LAN the machine still shows (empty once closed)."""
        found = [line for line in _ip("netns", "list", check=False).stdout.splitlines()
                 + _ip("-o", "link", "show", check=False).stdout.splitlines()
                 if f"mh-{self.suffix}-" in line or f"mh{self.suffix}" in line]
        return "\n".join(found)

