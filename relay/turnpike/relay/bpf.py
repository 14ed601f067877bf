"""Loading an eBPF object and using its maps, through the system's libbpf (``libbpf.so.1``).

libbpf does the hard parts (ELF parsing, BTF, map creation, relocations, the verifier log); this
module is a thin typed layer over the handful of its public functions the relay needs. Programs
are attached with a BPF link (TCX, Linux 6.6+): the attachment belongs to the link's file
descriptor, so when this process exits, for whatever reason, the program is detached and its
maps are freed with it. Nothing is pinned and nothing outlives the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

# <linux/bpf.h> enum bpf_attach_type; newer than the headers some distributions ship.
BPF_TCX_INGRESS = 46
BPF_ANY = 0
BPF_NOEXIST = 1
# <linux/capability.h>
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39


class BpfError(OSError):
    """A libbpf call failed; ``errno`` says why (EPERM: no CAP_BPF/CAP_NET_ADMIN)."""


_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    """The system's libbpf, with the prototypes used here declared (raises BpfError if absent)."""
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise BpfError(0, f"libbpf is not installed ({exc})") from None
    vp, cp, i, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
    prototypes: dict[str, tuple[type | None, list[type]]] = {
        "libbpf_set_print": (vp, [vp]),
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_program_by_name": (vp, [vp, cp]),
        "bpf_object__find_map_by_name": (vp, [vp, cp]),
        "bpf_program__fd": (i, [vp]),
        "bpf_map__fd": (i, [vp]),
        "bpf_link_create": (i, [i, i, u32, vp]),
        "bpf_map_update_elem": (i, [i, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "bpf_map_lookup_and_delete_elem": (i, [i, vp, vp]),
        "bpf_map_delete_elem": (i, [i, vp]),
        "bpf_map_get_next_key": (i, [i, vp, vp]),
        "libbpf_num_possible_cpus": (i, []),
    }
    for function, (restype, argtypes) in prototypes.items():
        fn = getattr(lib, function)
        fn.restype = restype
        fn.argtypes = argtypes
    lib.libbpf_set_print(None)  # no libbpf chatter on stderr; failures raise BpfError here
    _lib = lib
    return lib


ENOENT = 2


def _check(result: int, what: str) -> int:
    """libbpf 1.x returns -errno on failure."""
    if result < 0:
        raise BpfError(-result, f"{what}: {os.strerror(-result)}")
    return result


class BpfMap:
    """One map of a loaded object; keys and values are ``ctypes.Structure`` instances."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    def update(self, key: ctypes.Structure, value: ctypes.Structure, flags: int = BPF_ANY) -> None:
        lib = libbpf()
        _check(
            lib.bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags),
            f"updating map {self.name}",
        )

    def lookup(self, key: ctypes.Structure | ctypes.c_uint32, value: ctypes._CData) -> bool:
        """Fill ``value``; False when the key is absent."""
        result = libbpf().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        if result == -ENOENT:
            return False
        _check(result, f"reading map {self.name}")
        return True

    def pop(self, key: ctypes.Structure, value: ctypes.Structure) -> bool:
        """Delete ``key`` and fill ``value`` with what it held, in one step; False if absent."""
        result = libbpf().bpf_map_lookup_and_delete_elem(
            self.fd, ctypes.byref(key), ctypes.byref(value)
        )
        if result == -ENOENT:
            return False
        _check(result, f"deleting from map {self.name}")
        return True

    def items(
        self, key_type: type[ctypes.Structure], value_type: type[ctypes.Structure]
    ) -> list[tuple[ctypes.Structure, ctypes.Structure]]:
        """Every (key, value) in the map now (a snapshot; entries may change meanwhile)."""
        lib = libbpf()
        found: list[tuple[ctypes.Structure, ctypes.Structure]] = []
        previous: ctypes.Structure | None = None
        while True:
            key = key_type()
            here = ctypes.byref(previous) if previous is not None else None
            result = lib.bpf_map_get_next_key(self.fd, here, ctypes.byref(key))
            if result == -ENOENT:
                return found
            _check(result, f"listing map {self.name}")
            value = value_type()
            if self.lookup(key, value):
                found.append((key, value))
            previous = key

    def delete(self, key: ctypes.Structure) -> None:
        result = libbpf().bpf_map_delete_elem(self.fd, ctypes.byref(key))
        if result != -ENOENT:
            _check(result, f"deleting from map {self.name}")


def possible_cpus() -> int:
    """How many values a per-CPU map holds for each key."""
    return _check(libbpf().libbpf_num_possible_cpus(), "counting CPUs")


def not_permitted_because(status: Path = Path("/proc/self/status")) -> str:
    """Why loading was refused with EPERM, as far as this process can tell from its own status
    (proc(5)): a capability it lacks, or, holding both, the seccomp filter it runs under.

    Container runtimes' default seccomp profiles allowed bpf(2) only with CAP_SYS_ADMIN until
    they learned CAP_BPF (containerd 1.6.9 and 1.7, containers-common 0.60 used by CRI-O 1.31 and
    Podman): there a pod holding exactly CAP_BPF and CAP_NET_ADMIN gets EPERM from the filter,
    not from the kernel. "" when neither explains it (an LSM, say).
    """
    try:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        effective = int(fields["CapEff"].strip(), 16)
    except (OSError, KeyError, ValueError):
        return ""
    if effective >> CAP_SYS_ADMIN & 1:  # stands in for both, and every profile allows it
        return ""
    wanted = (("CAP_BPF", CAP_BPF), ("CAP_NET_ADMIN", CAP_NET_ADMIN))
    missing = [name for name, bit in wanted if not effective >> bit & 1]
    if missing:
        return f"the process lacks {' and '.join(missing)}"
    if fields.get("Seccomp", "").strip() == "2":
        return (
            "CAP_BPF and CAP_NET_ADMIN are held, so the seccomp filter refused bpf(2) (runtime "
            "default profiles before containerd 1.6.9 and CRI-O 1.31 allow it only with "
            "CAP_SYS_ADMIN)"
        )
    return ""


class BpfObject:
    """A compiled eBPF object file, loaded into the kernel (needs CAP_BPF and CAP_NET_ADMIN)."""

    def __init__(self, path: Path) -> None:
        lib = libbpf()
        ctypes.set_errno(0)
        obj = lib.bpf_object__open_file(str(path).encode(), None)
        if not obj:
            code = ctypes.get_errno() or 22
            raise BpfError(code, f"cannot open {path.name}: {os.strerror(code)}")
        self._obj: int | None = obj
        self._links: dict[int, int] = {}  # interface index -> link fd
        try:
            _check(lib.bpf_object__load(obj), f"loading {path.name}")
        except BpfError as exc:
            self.close()
            why = not_permitted_because() if exc.errno == errno.EPERM else ""
            if why:
                raise BpfError(exc.errno, f"{exc.strerror}: {why}") from None
            raise

    def _handle(self) -> int:
        if self._obj is None:
            raise BpfError(9, "the eBPF object is closed")  # EBADF
        return self._obj

    def map(self, name: str) -> BpfMap:
        found = libbpf().bpf_object__find_map_by_name(self._handle(), name.encode())
        if not found:
            raise BpfError(2, f"no map {name!r} in the eBPF object")
        return BpfMap(_check(libbpf().bpf_map__fd(found), f"map {name}"), name)

    def program_fd(self, name: str) -> int:
        found = libbpf().bpf_object__find_program_by_name(self._handle(), name.encode())
        if not found:
            raise BpfError(2, f"no program {name!r} in the eBPF object")
        return _check(libbpf().bpf_program__fd(found), f"program {name}")

    def attach_tc_ingress(self, program: str, ifindex: int) -> None:
        """Attach ``program`` at TC ingress of ``ifindex`` with a link this process holds."""
        if ifindex in self._links:
            return
        fd = libbpf().bpf_link_create(self.program_fd(program), ifindex, BPF_TCX_INGRESS, None)
        self._links[ifindex] = _check(fd, f"attaching to interface {ifindex}")

    @property
    def attached(self) -> set[int]:
        """Interface indexes this object holds a link on."""
        return set(self._links)

    def release(self, ifindex: int) -> None:
        """Drop the link on an interface (the kernel detached it when the interface went)."""
        fd = self._links.pop(ifindex, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Detach every link and free the programs and maps (idempotent)."""
        for fd in self._links.values():
            os.close(fd)
        self._links.clear()
        if self._obj is not None:
            libbpf().bpf_object__close(self._obj)
            self._obj = None
