"""SIPp for the gateway's SIP tests: run a committed scenario against a SIP port, read its pcaps."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import IN_CI, free_dual_port, free_port, require_tool

SCENARIOS = Path(__file__).resolve().parent.parent / "streamgw" / "sipp"
SIPP_DATA = Path("/usr/share/sip-tester")  # the pcaps Debian's sip-tester ships


def require_raw_sockets() -> None:
    """SIPp plays pcap audio through a raw socket, which needs root (CI runs as root)."""
    if os.geteuid() == 0:
        return
    if IN_CI:
        pytest.fail("SIPp's pcap playback needs root; CI must run as root")
    pytest.skip("SIPp's pcap playback needs root")


@dataclass
class SippResult:
    returncode: int
    output: str
    messages: str  # what SIPp sent and received (-trace_msg)


async def run_sipp(
    scenario: str,
    target_port: int,
    workdir: Path,
    *,
    service: str = "+15550002222",
    transport: str = "u1",
    calls: int = 1,
    timeout: float = 40.0,
    extra: tuple[str, ...] = (),
) -> SippResult:
    """Run ``tests/streamgw/sipp/<scenario>.xml``; SIPp's exit code says if it went as written."""
    sipp = require_tool("sipp", "apt-get install sip-tester")
    workdir.mkdir(parents=True, exist_ok=True)
    for pcap in SIPP_DATA.glob("*.pcap"):
        if not (workdir / pcap.name).exists():
            shutil.copy(pcap, workdir / pcap.name)
    local = free_dual_port()
    media = free_port(socket.SOCK_DGRAM)
    proc = await asyncio.create_subprocess_exec(
        sipp,
        "-sf", str(SCENARIOS / f"{scenario}.xml"),
        "-s", service,
        "-i", "127.0.0.1",
        "-p", str(local),
        "-mp", str(media),
        "-t", transport,
        "-m", str(calls),
        "-nostdin",
        "-timeout", f"{int(timeout)}s",
        "-timeout_error",
        "-trace_msg",
        "-message_file", str(workdir / "messages.log"),
        *extra,
        f"127.0.0.1:{target_port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    log = workdir / "messages.log"
    messages = log.read_text(errors="replace") if log.exists() else ""
    return SippResult(proc.returncode or 0, out.decode(errors="replace"), messages)


def pcap_rtp_payloads(path: Path) -> list[tuple[int, int, bytes]]:
    """(payload type, sequence, payload) of each RTP packet in a classic Ethernet/IPv4/UDP pcap."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    assert magic == 0xA1B2C3D4, "little-endian classic pcap expected"
    offset = 24
    out = []
    while offset < len(data):
        _, _, length, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = frame[14:]
        rtp = ip[(ip[0] & 0x0F) * 4 + 8 :]
        out.append((rtp[1] & 0x7F, struct.unpack_from("!H", rtp, 2)[0], rtp[12:]))
    return out


async def send_udp(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    """One datagram to the SIP port; the final (non-1xx) answer, if one comes within ``timeout``."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not answer.done() and not data.startswith(b"SIP/2.0 1"):
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        transport.sendto(data, ("127.0.0.1", port))
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            return None
    finally:
        transport.close()


@dataclass
class Baresip:
    """A baresip user agent dialling one call, with digest credentials; it records what it hears."""

    directory: Path
    returncode: int
    output: str

    def heard(self) -> bytes:
        """The audio baresip decoded from the call, 16-bit little-endian PCM at 8 kHz."""
        (dump,) = self.directory.glob("dump-*-dec.wav")
        data = dump.read_bytes()
        return data[data.index(b"data") + 8 :]


async def run_baresip(
    directory: Path,
    target: str,
    speech_wav_8k: Path,
    username: str,
    password: str,
    seconds: int,
    ca_file: Path | None = None,
) -> Baresip:
    """Dial ``target`` (a sip: URI) from a fresh baresip, sending ``speech_wav_8k`` as the caller's
    audio; baresip hangs up (BYE) after ``seconds`` unless the gateway hangs up first. With
    ``ca_file`` the account uses TLS and trusts that CA."""
    baresip = require_tool("baresip", "apt-get install baresip")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_dual_port()
    tls = f"sip_cafile {ca_file}\n" if ca_file else ""
    (directory / "config").write_text(
        f"sip_listen 127.0.0.1:{port}\n{tls}"
        f"audio_source aufile,{speech_wav_8k}\n"
        "audio_player aufile,/dev/null\n"
        "audio_alert aufile,/dev/null\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule account.so\nmodule menu.so\n"
        f"snd_path {directory}\n"
    )
    transport = ";transport=tls" if ca_file else ""
    (directory / "accounts").write_text(
        f"<sip:{username}@127.0.0.1{transport}>;auth_pass={password};regint=0;audio_codecs=PCMU\n"
    )
    proc = await asyncio.create_subprocess_exec(
        baresip, "-f", str(directory), "-e", f"/dial {target}", "-t", str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=directory,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Baresip(directory, proc.returncode or 0, out.decode(errors="replace"))
