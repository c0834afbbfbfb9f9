"""Which IP addresses a client's URL may reach: public unicast ones only (urlguard's rule)."""

from __future__ import annotations

import ipaddress

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Special ranges that Python 3.11's is_private/is_global/is_reserved still call public.
_SPECIAL = ((ipaddress.ip_network("fec0::/10"), "a site-local address (deprecated)"),
            (ipaddress.ip_network("3fff::/20"), "a documentation address"),
            (ipaddress.ip_network("192.88.99.0/24"), "a 6to4 relay address (deprecated)"))


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or value >> 32 in (0, 0xFFFF0000):  # NAT64, compatible, SIIT
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of address this is when it is not a public unicast one, else None."""
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_loopback or ip.is_unspecified):
        if (v4 := _embedded_v4(ip)) is not None:
            why = refusal(v4)
            return None if why is None else f"{why} (IPv4 {v4} inside IPv6)"
    for hit, kind in ((ip.is_loopback, "a loopback address"),
                      (ip.is_unspecified, "the unspecified address"),
                      (ip.is_link_local, "a link-local address"),
                      (ip.is_multicast, "a multicast address"),
                      (ip.version == 4 and ip in _SHARED, "a shared (carrier-grade NAT) address"),
                      (ip.is_private, "a private address"),
                      (ip.is_reserved, "a reserved address"),
                      *((ip in net, kind) for net, kind in _SPECIAL if net.version == ip.version),
                      (not ip.is_global, "not a public address")):
        if hit:
            return kind
    return None
