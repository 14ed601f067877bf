"""The turnpike image under test, and pods run from it as a kubelet would run them.

`build_image` runs scripts/image with Podman on storage of its own (under the user's cache
directory, so the layer cache and the Debian-built base survive between sessions and the host's own
Podman storage is never touched), or with Docker: the script's private dockerd, its store next to
Podman's; that image is loaded into the test Podman from its `docker save` archive. `PodRun` turns
a rendered pod spec (from the chart or the operator) into `podman run` flags: the user, group and
fsGroup, read-only root filesystem, no-new-privileges, capabilities, sysctls, args, env and
envFrom, and Secret, ConfigMap and emptyDir volumes as the kubelet lays them out (files owned by
root and the fsGroup, with the rendered modes, mounted read-only where the pod says so).

Networking is the one deliberate difference: a container runs on the host network, and each
wildcard listen address in the args and environment ("0.0.0.0:PORT") is rewritten to the loopback
address and free port the test chose for it (an unmapped wildcard is an error, so no container ever
listens on the host's real interfaces), or in a network namespace the test made. What a test adds
to a pod (a kubeconfig instead of a service account, a test CA) is named in
``extra_files``/``extra_env``. Podman's one semantic difference from a kubelet's runtime, ambient
capabilities for non-root users, is undone at start (`PodRun.entrypoint`). RuntimeDefault is
Podman's default seccomp profile unless the test names the profile standing for it
(``seccomp_profile``, from `bpf_seccomp_profile`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import resource
import secrets
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support import IN_CI, require_tool

ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
WILDCARD = re.compile(r"0\.0\.0\.0:(\d+)")


def state_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "turnpike" / "container-tests"


class Podman:
    """`podman` on storage and runtime directories of its own."""

    def __init__(self, state: Path) -> None:
        self.path = require_tool("podman", "apt-get install podman")
        state.mkdir(parents=True, exist_ok=True)
        storage, conf = state / "storage.conf", state / "containers.conf"
        storage.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{state}/storage"\n'
            f'runroot = "{state}/run"\n'
        )
        conf.write_text(f'[engine]\ntmp_dir = "{state}/tmp"\nevents_logger = "file"\n')
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_CONF": str(conf),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.path, *args], env=self.env, capture_output=True, text=True, check=check
        )


def require_root_podman() -> Podman:
    """Podman as root (the runs need to own Secret files as root and add groups); skipped when
    not root, except under CI=true where it fails."""
    if os.geteuid() != 0:
        message = "the container tests run the image as root with Podman"
        if IN_CI:
            pytest.fail(message + "; CI must run them")
        pytest.skip(message)
    require_tool("mmdebstrap", "apt-get install mmdebstrap")
    return Podman(state_dir())


def scripts_image(
    podman: Podman, image: str, *args: str, context: Path = ROOT, engine: str = "podman"
) -> subprocess.CompletedProcess[str]:
    """scripts/image of the tree at ``context``, with this Podman, or (engine "docker") with a
    private Docker daemon of the script's own whose store is kept next to Podman's."""
    env = {**podman.env, "ENGINE": engine, "IMAGE": image}
    if engine == "docker":
        env |= {"PRIVATE_DOCKERD": "1", "DOCKER_DATA_ROOT": str(docker_data_root())}
    script = context / "scripts" / "image"
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, check=False
    )


def docker_data_root() -> Path:
    return state_dir() / "dockerd"


def require_docker() -> None:
    """Debian's dockerd and its docker client (20.10, BuildKit built in); under CI=true a
    missing one fails."""
    require_tool("dockerd", "apt-get install docker.io")
    require_tool("/usr/bin/docker", "apt-get install docker.io")


def build_image(podman: Podman, image: str, output: Path, engine: str = "podman") -> str:
    """scripts/image --output; a failed build fails the test with the build's output."""
    proc = scripts_image(podman, image, "--output", str(output), engine=engine)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"scripts/image failed ({proc.returncode}):\n{text[-6000:]}")
    return text


def ulimit_flags() -> list[str]:
    """Explicit limits: Podman's defaults for root (over a million open files and processes)
    exceed what a sandbox without CAP_SYS_RESOURCE may set, and the container fails to start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [f"--ulimit=nofile={soft}:{hard}", "--ulimit=nproc=4096:4096"]


CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt")
CONTEXT_DIRS = ("scripts", "turnpike", "relay", "streamgw", "operator")


def context_digest(root: Path = ROOT) -> str:
    """A short hash of what the image is built from, to tag the test image by: sessions of
    different trees sharing the cache never run each other's image."""
    digest = hashlib.sha256()
    paths = [root / name for name in CONTEXT_FILES]
    for folder in CONTEXT_DIRS:
        paths += sorted(
            p
            for p in (root / folder).rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and not any(part.endswith(".egg-info") for part in p.parts)
            and not p.name.endswith((".pyc", ".bpf.o"))
        )
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def archive_tags(path: Path) -> list[str]:
    """The image names a `docker save` archive holds (from its manifest.json)."""
    with tarfile.open(path) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    return [tag for entry in manifest for tag in entry.get("RepoTags") or []]


def pod_spec(workload: Obj) -> Obj:
    return dict(workload["spec"]["template"]["spec"])


def container_named(spec: Obj, name: str) -> Obj:
    return dict(next(c for c in spec["containers"] if c["name"] == name))


@dataclass
class PodRun:
    """One container of a rendered pod, ready to run: the test supplies the Secret and ConfigMap
    contents, the values of fieldRef variables, and where each wildcard port listens."""

    image: str
    spec: Obj
    container: Obj
    workdir: Path
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    listen: dict[int, str] = field(default_factory=dict)
    # "host" (loopback addresses only, see above), or "none": a network namespace of the pod's
    # own with loopback only, where wildcard addresses stay as rendered.
    network: str = "host"
    # What the test adds on top of the rendered pod (say KUBECONFIG or SSL_CERT_FILE), each
    # named explicitly: files mounted read-only, and environment variables.
    extra_files: dict[str, Path] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    # The profile that stands for RuntimeDefault (see `bpf_seccomp_profile`); None: Podman's own.
    seccomp_profile: Path | None = None

    def _localize(self, text: str) -> str:
        if self.network != "host":
            return text

        def swap(match: re.Match[str]) -> str:
            port = int(match[1])
            if port not in self.listen:
                raise AssertionError(f"{match[0]} would listen on every host address: map it")
            return self.listen[port]

        return WILDCARD.sub(swap, text)

    def security_flags(self) -> list[str]:
        pod = self.spec.get("securityContext") or {}
        ctx = self.container.get("securityContext") or {}
        flags: list[str] = []
        uid = ctx.get("runAsUser", pod.get("runAsUser"))
        gid = ctx.get("runAsGroup", pod.get("runAsGroup"))
        non_root = ctx.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if uid is None and non_root:
            raise AssertionError("runAsNonRoot without a numeric runAsUser: the kubelet refuses")
        if non_root and uid == 0:
            raise AssertionError("runAsNonRoot with runAsUser 0: the kubelet refuses to start it")
        if uid is not None:
            flags.append(f"--user={uid}:{gid if gid is not None else 0}")
        for group in [pod.get("fsGroup"), *(pod.get("supplementalGroups") or [])]:
            if group is not None:
                flags.append(f"--group-add={group}")
        if ctx.get("readOnlyRootFilesystem"):
            flags += ["--read-only", "--read-only-tmpfs=false"]
        if ctx.get("allowPrivilegeEscalation") is False:
            flags.append("--security-opt=no-new-privileges")
        if ctx.get("privileged"):
            raise AssertionError("privileged containers are not expected")
        caps = ctx.get("capabilities") or {}
        flags += [f"--cap-drop={c}" for c in caps.get("drop", [])]
        flags += [f"--cap-add={c}" for c in caps.get("add", [])]
        seccomp = (ctx.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault"):
            raise AssertionError(f"unexpected seccomp profile {seccomp}")
        if seccomp == "RuntimeDefault" and self.seccomp_profile is not None:
            flags.append(f"--security-opt=seccomp={self.seccomp_profile}")
        flags += [f"--sysctl={s['name']}={s['value']}" for s in pod.get("sysctls") or []]
        return flags

    def _files(self, name: str, source: Obj, data: dict[str, str]) -> Path:
        """A Secret or ConfigMap volume as the kubelet writes it: owned by root and the fsGroup,
        the item paths and modes the volume names (defaultMode, else 0644)."""
        directory = self.workdir / "volumes" / name
        directory.mkdir(parents=True)
        group = (self.spec.get("securityContext") or {}).get("fsGroup")
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            path = directory / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])
            os.chown(path, 0, group if group is not None else 0)
            path.chmod(item.get("mode", source.get("defaultMode", 0o644)))
        os.chown(directory, 0, group if group is not None else 0)
        directory.chmod(0o755)
        return directory

    def volume_flags(self) -> list[str]:
        mounts = {m["name"]: m for m in self.container.get("volumeMounts") or []}
        flags: list[str] = []
        for volume in self.spec.get("volumes") or []:
            mount = mounts.get(volume["name"])
            if mount is None:
                continue
            target, ro = mount["mountPath"], ":ro" if mount.get("readOnly") else ""
            if "secret" in volume:
                src = volume["secret"]
                path = self._files(volume["name"], src, self.secrets[src["secretName"]])
            elif "configMap" in volume:
                src = volume["configMap"]
                path = self._files(volume["name"], src, self.config_maps[src["name"]])
            elif "emptyDir" in volume:
                flags.append(f"--tmpfs={target}:rw,mode=1777")
                continue
            else:
                raise AssertionError(f"volume kind not handled: {volume}")
            flags.append(f"--volume={path}:{target}{ro}")
        for index, (target, source) in enumerate(self.extra_files.items()):
            copy = self.workdir / "extra" / str(index) / source.name
            copy.parent.mkdir(parents=True)
            copy.write_bytes(source.read_bytes())
            copy.chmod(0o444)
            flags.append(f"--volume={copy}:{target}:ro")
        return flags

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in self.container.get("envFrom") or []:
            env.update(self.config_maps[source["configMapRef"]["name"]])
        for var in self.container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                env[var["name"]] = self.fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        env.update(self.extra_env)
        return {k: self._localize(v) for k, v in env.items()}

    def entrypoint(self) -> list[str]:
        """The image's entrypoint, started as a CRI runtime starts it. Podman, unlike the
        runtimes a kubelet drives, also puts capabilities added for a non-root user into the
        ambient set, where they survive exec; clearing that set first gives the kubelet's
        semantics (an added capability is usable only by uid 0)."""
        clear_ambient = (
            "import ctypes, os, sys;"
            "ctypes.CDLL(None, use_errno=True).prctl(47, 4, 0, 0, 0);"  # PR_CAP_AMBIENT_CLEAR_ALL
            "os.execvp('turnpike', ['turnpike', *sys.argv[1:]])"
        )
        return ["--entrypoint=python3", self.image, "-c", clear_ambient]

    def command(self, name: str) -> list[str]:
        limits = ulimit_flags()
        env = [f"--env={k}={v}" for k, v in self.environment().items()]
        args = [self._localize(a) for a in self.container.get("args") or []]
        return [
            "run", "--rm", f"--name={name}", "--pull=never", f"--network={self.network}",
            *limits, *self.security_flags(), *self.volume_flags(), *env,
            *self.entrypoint(), *args,
        ]  # fmt: skip


def bpf_seccomp_profile(podman: Podman, directory: Path, *, cap_bpf: bool) -> Path:
    """Podman's default seccomp profile with bpf(2) gated as one generation of Kubernetes
    runtimes gates it in RuntimeDefault: with CAP_BPF as well as CAP_SYS_ADMIN (containerd
    1.6.9 and 1.7 on, CRI-O 1.31 on through containers-common 0.60), or with CAP_SYS_ADMIN only
    (the runtimes before them, and Debian 12's Podman 4.3). Every other rule stays Podman's own;
    a call refused is refused with EPERM, as those profiles refuse it."""
    info = podman("info", "--format", "{{.Host.Security.SECCOMPProfilePath}}").stdout.strip()
    source = Path(info)
    if not source.is_file():
        raise AssertionError(f"Podman names no default seccomp profile file ({info!r})")
    profile = json.loads(source.read_text())
    rules: list[Obj] = []
    for rule in profile["syscalls"]:
        names = rule.get("names") or []
        if rule.get("name") == "bpf":
            raise AssertionError(f"a rule form not handled here: {rule}")
        if "bpf" not in names:
            rules.append(rule)
        elif len(names) > 1:
            rules.append({**rule, "names": [n for n in names if n != "bpf"]})
    gates = ["CAP_SYS_ADMIN", "CAP_BPF"] if cap_bpf else ["CAP_SYS_ADMIN"]
    rules += [
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}} for cap in gates
    ]
    refused = {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}
    rules.append({**refused, "excludes": {"caps": gates}})
    path = directory / ("seccomp-cap-bpf.json" if cap_bpf else "seccomp-sys-admin-only.json")
    path.write_text(json.dumps({**profile, "syscalls": rules}))
    return path


class Running:
    """A container started by `podman run` (attached, its output in a file), stopped with
    `podman stop` (SIGTERM, as the kubelet does) when the block ends."""

    def __init__(
        self, podman: Podman, name: str, proc: subprocess.Popen[bytes], log: Path, grace: int
    ) -> None:
        self.podman, self.name, self.proc, self.log = podman, name, proc, log
        self.grace = grace

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.podman("stop", f"--time={self.grace}", self.name, check=False)
        try:
            return self.proc.wait(self.grace + 10)
        except subprocess.TimeoutExpired:
            self.podman("rm", "--force", self.name, check=False)
            return self.proc.wait(10)


@contextlib.contextmanager
def run_pod(podman: Podman, pod: PodRun) -> Iterator[Running]:
    name = f"turnpike-test-{secrets.token_hex(4)}"
    log = pod.workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [podman.path, *pod.command(name)],
            env=podman.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # The pod's grace period, as the kubelet gives it, but never more than 10 s in a test.
    grace = min(int(pod.spec.get("terminationGracePeriodSeconds", 30)), 10)
    running = Running(podman, name, proc, log, grace)
    try:
        yield running
    finally:
        running.stop()


def wait_ready(running: Running, url: str, timeout: float = 30) -> None:
    """Poll ``url`` (a readiness probe) until it answers 200; the container must stay up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running.alive():
            raise AssertionError(f"the container exited:\n{running.output}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (http only)
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout}s:\n{running.output}")


def chart_values(image: str) -> Obj:
    """Chart values pointing every pod at ``image`` (a local name: never pulled)."""
    repository, _, tag = image.rpartition(":")
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}


def render_chart(values: Obj) -> list[Obj]:
    """The chart's objects, rendered by Helm's own engine."""
    import helm_python
    from charts.chartkit import CHART, NAMESPACE, RELEASE, parse_render

    with helm_python.Chart.load(CHART) as chart:
        return parse_render(chart.render(values, name=RELEASE, namespace=NAMESPACE))


def workload_named(objects: list[Obj], kind: str, suffix: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix))
