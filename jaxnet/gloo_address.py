"""The address at which a process of a CPU job receives the other processes'
collectives (gloo), chosen so that the others can reach it.

Left to itself, jaxlib's gloo (0.10) announces the address its host's name
resolves to. On many machines (Debian's default ``/etc/hosts``, containers) that
is a loopback address, 127.0.1.1 or 127.0.0.1, which a process on another host
reaches as itself: the job then fails in its first collective. Here gloo is
given instead this host's address on the route to the coordinator, which every
process can reach (they all reach the coordinator). On one machine, with the
coordinator at 127.0.0.1, that is 127.0.0.1 itself.

The choice is passed through a private part of JAX (``xla_bridge``'s CPU backend
factory, ``make_gloo_tcp_collectives(hostname=...)``). On a JAX without them
``use_route_to_coordinator`` returns False, and ``check_hostname`` refuses before
joining the case that would fail: a host name that resolves to a loopback
address while the coordinator is on another host.
"""
from __future__ import annotations

import inspect
import ipaddress
import socket

HINT = ("each host's name must resolve to an address the other hosts reach (not "
        "127.x), or the hosts cannot exchange collectives")


def local_address_towards(host: str) -> str:
    """This host's address on the route to ``host`` (a name or an address). A UDP
    socket's connect sends nothing: the kernel only picks the route and its source."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host.strip("[]"), 9,
                                                   type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return probe.getsockname()[0]


def use_route_to_coordinator() -> bool:
    """Make the CPU backend's gloo announce this host's address on the route to the
    job's coordinator; False, changing nothing, on a JAX where this is not possible.
    Call after deciding to join and before JAX makes its backends."""
    try:
        from jax._src import distributed as jax_distributed, xla_bridge
        from jax._src.lib import _jax
        make_gloo = _jax.make_gloo_tcp_collectives
        takes_collectives = "collectives" in inspect.signature(xla_bridge.make_cpu_client).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    if not takes_collectives or "hostname" not in (make_gloo.__doc__ or ""):
        return False

    def make_cpu_client():
        state = jax_distributed.global_state
        if state.client is None:  # not (yet) part of a job: JAX's own choice
            return xla_bridge.make_cpu_client()
        host = state.coordinator_address.rpartition(":")[0]
        return xla_bridge.make_cpu_client(collectives=make_gloo(
            distributed_client=state.client, hostname=local_address_towards(host)))

    try:
        xla_bridge.register_backend_factory("cpu", make_cpu_client, priority=0,
                                            fail_quietly=False)
    except RuntimeError:  # the CPU backend exists already
        return False
    return True


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def check_hostname(coordinator: str) -> None:
    """Refuse (ValueError), before joining, a host whose name resolves to a loopback
    address when the coordinator (HOST:PORT) is on another host: gloo would announce
    that address and the other processes could not reach this one."""
    host = coordinator.rpartition(":")[0]
    try:
        if _loopback(local_address_towards(host)):
            return  # the whole job is on this machine
        name = socket.gethostname()
        resolved = socket.getaddrinfo(name, None)[0][4][0]
    except (OSError, ValueError):
        return  # the join itself says what is wrong with the coordinator's name
    if _loopback(resolved):
        raise ValueError(
            f"this host's name {name} resolves to {resolved}, a loopback address, which the "
            f"other hosts of the job cannot reach: map {name} to this host's address on the "
            f"network (in /etc/hosts or DNS: {local_address_towards(host)} {name}), then "
            f"start every process again")
