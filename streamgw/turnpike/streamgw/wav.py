"""WAV files for ``<Play>``: µ-law, A-law or 16-bit PCM at any rate, out as 8 kHz mono µ-law."""

from __future__ import annotations

import array
import struct

from turnpike.streamgw import g711

FORMAT_PCM = 1
FORMAT_ALAW = 6
FORMAT_ULAW = 7
FORMAT_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    pass


def wav_to_ulaw(data: bytes) -> bytes:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a WAV file (RIFF/WAVE header missing)")
    fmt: tuple[int, int, int, int] | None = None
    audio: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise WavError("fmt chunk too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            audio = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or audio is None:
        raise WavError("WAV file without fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or not 1000 <= rate <= 192000:
        raise WavError(f"unusable WAV: {channels} channels at {rate} Hz")
    if tag == FORMAT_ULAW and bits == 8:
        if channels == 1 and rate == 8000:
            return audio
        samples = g711.decode_ulaw(audio)
    elif tag == FORMAT_ALAW and bits == 8:
        if channels == 1 and rate == 8000:
            return g711.alaw_to_ulaw(audio)
        samples = g711.decode_alaw(audio)
    elif tag == FORMAT_PCM and bits == 16:
        samples = g711.pcm16_from_bytes(audio)
    elif tag == FORMAT_PCM and bits == 8:
        samples = array.array("h", ((b - 128) << 8 for b in audio))
    else:
        raise WavError(
            f"unsupported WAV encoding (format {tag}, {bits} bits); use µ-law or 16-bit PCM"
        )
    mono = g711.mix_to_mono(samples, channels)
    return g711.pcm16_to_ulaw(g711.resample(mono, rate))
