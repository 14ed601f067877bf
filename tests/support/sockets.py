"""Which local TCP ports a process holds, read from Linux's /proc (no extra dependency).

A server that sees a connection from 127.0.0.1:PORT can tell which child process opened it:
``PORT in tcp_ports(pid)``. Ports of sockets the process has closed are not included.
"""

from __future__ import annotations

import os
from pathlib import Path


def _inodes(pid: int) -> set[str]:
    """The inodes of the process's open sockets."""
    found = set()
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        try:
            target = os.readlink(fds / fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def tcp_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets (IPv4 and IPv6) that process ``pid`` has open."""
    inodes = _inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
