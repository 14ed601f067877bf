"""G.711 µ-law and A-law, plus the little PCM work `<Play>` needs.

Everything is table driven: the per-packet paths (A-law in, A-law out) are one ``bytes.translate``
call, which runs in C. Written here rather than taken from ``audioop`` because that module is gone
from Python 3.13.
"""

from __future__ import annotations

import array
import sys
from functools import cache

ULAW_SILENCE = 0xFF
SILENCE_FRAME = bytes([ULAW_SILENCE]) * 160

_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEGMENT_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    sample = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -sample if sign else sample


def linear_to_ulaw(sample: int) -> int:
    """The classic reference encoder's rounding (14-bit, floor shift), so output matches it."""
    pcm = sample >> 2
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, _ULAW_CLIP) + (_BIAS >> 2)
    segment = next((n for n, end in enumerate(_ULAW_SEGMENT_END) if pcm <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((pcm >> (segment + 1)) & 0x0F)) ^ mask


def alaw_to_linear(code: int) -> int:
    code ^= 0x55
    exponent = (code & 0x70) >> 4
    mantissa = code & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if code & 0x80 else -sample


_ALAW_SEGMENT_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def linear_to_alaw(sample: int) -> int:
    pcm = sample >> 3  # A-law works on 13 bits
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    segment = next((n for n, end in enumerate(_ALAW_SEGMENT_END) if pcm <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (pcm >> 1) & 0x0F if segment < 2 else (pcm >> segment) & 0x0F
    return code ^ mask


ALAW_TO_ULAW = bytes(linear_to_ulaw(alaw_to_linear(a)) for a in range(256))
ULAW_TO_ALAW = bytes(linear_to_alaw(ulaw_to_linear(u)) for u in range(256))


def alaw_to_ulaw(data: bytes) -> bytes:
    return data.translate(ALAW_TO_ULAW)


def ulaw_to_alaw(data: bytes) -> bytes:
    return data.translate(ULAW_TO_ALAW)


@cache
def _ulaw_table16() -> bytes:
    """µ-law code for every 16-bit sample, indexed by the sample's unsigned bit pattern."""
    return bytes(linear_to_ulaw(s - 65536 if s >= 32768 else s) for s in range(65536))


def pcm16_to_ulaw(samples: array.array[int]) -> bytes:
    table = _ulaw_table16()
    return bytes(table[s & 0xFFFF] for s in samples)


def decode_ulaw(data: bytes) -> array.array[int]:
    return array.array("h", (ulaw_to_linear(b) for b in data))


def decode_alaw(data: bytes) -> array.array[int]:
    return array.array("h", (alaw_to_linear(b) for b in data))


def pcm16_from_bytes(data: bytes) -> array.array[int]:
    """Little-endian 16-bit samples (WAV order) as native ints."""
    samples = array.array("h")
    samples.frombytes(data[: len(data) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def mix_to_mono(samples: array.array[int], channels: int) -> array.array[int]:
    if channels == 1:
        return samples
    out = array.array("h")
    for i in range(0, len(samples) - channels + 1, channels):
        out.append(sum(samples[i : i + channels]) // channels)
    return out


def resample(samples: array.array[int], rate: int, target: int = 8000) -> array.array[int]:
    """Linear interpolation: enough for prompts and hold music on an 8 kHz phone line."""
    if rate == target or not samples:
        return samples
    count = len(samples) * target // rate
    step = rate / target
    last = len(samples) - 1
    out = array.array("h", bytes(2 * count))
    for i in range(count):
        pos = i * step
        j = int(pos)
        frac = pos - j
        a = samples[j]
        b = samples[j + 1] if j < last else a
        out[i] = int(a + (b - a) * frac)
    return out
