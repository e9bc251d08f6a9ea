"""A JPEG-LS encoder (ITU-T T.87, regular and run mode, default parameters) for phantom DICOM files.

No JPEG-LS encoder is installed here (pydicom's needs pyjpegls; pylibjpeg-libjpeg only
decodes), yet JPEG-LS files must be written to test the reader on them. This is the
standard's encoding procedure (Annex A) in plain Python: slow (a few microseconds a
sample), fine for small phantom frames, and deterministic. Its output is checked by an
independent decoder (libjpeg through pydicom) in the tests.

One component per scan (ILV = 0): a grey frame is one scan, an RGB frame three.
`near` = 0 is lossless; `near` > 0 is near-lossless (every sample within `near`).
"""
from __future__ import annotations

import struct

import numpy as np

__all__ = ["encode_jpegls"]

# Run-length order table J (T.87, A.7.1.2).
_J = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15)
_RESET = 64


class _Bits:
    """MSB-first bit writer with JPEG-LS marker stuffing: after an 0xFF byte the next byte carries 7 bits."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0      # pending bits, most significant first
        self.n = 0        # how many

    def put(self, value: int, nbits: int) -> None:
        self.acc = (self.acc << nbits) | (value & ((1 << nbits) - 1))
        self.n += nbits
        while True:
            width = 7 if self.out and self.out[-1] == 0xFF else 8
            if self.n < width:
                return
            self.n -= width
            self.out.append((self.acc >> self.n) & ((1 << width) - 1))
            self.acc &= (1 << self.n) - 1

    def zeros(self, count: int) -> None:
        while count > 24:
            self.put(0, 24)
            count -= 24
        self.put(0, count)

    def flush(self) -> bytes:
        width = 7 if self.out and self.out[-1] == 0xFF else 8
        if self.n:
            self.put(0, width - self.n)
        if self.out and self.out[-1] == 0xFF:
            self.out.append(0)  # a scan may not end on 0xFF (it would read as a marker)
        return bytes(self.out)


def _params(maxval: int, near: int) -> tuple[int, int, int]:
    """Default thresholds T1, T2, T3 (T.87, C.2.4.1.1)."""
    def clamp(v: int, lo: int, hi: int) -> int:
        return lo if v > hi or v < lo else v

    if maxval >= 128:
        factor = (min(maxval, 4095) + 128) >> 8
        t1 = clamp(factor * (3 - 2) + 2 + 3 * near, near + 1, maxval)
        t2 = clamp(factor * (7 - 3) + 3 + 5 * near, t1, maxval)
        t3 = clamp(factor * (21 - 4) + 4 + 7 * near, t2, maxval)
    else:
        factor = 256 // (maxval + 1)
        t1 = clamp(max(2, 3 // factor + 3 * near), near + 1, maxval)
        t2 = clamp(max(3, 7 // factor + 5 * near), t1, maxval)
        t3 = clamp(max(4, 21 // factor + 7 * near), t2, maxval)
    return t1, t2, t3


def _encode_plane(plane: np.ndarray, maxval: int, near: int, bits: _Bits) -> None:
    """Code one component (T.87 Annex A) into `bits`."""
    h, w = plane.shape
    rng = (maxval + 2 * near) // (2 * near + 1) + 1
    qbpp = max(1, (rng - 1).bit_length())
    bpp = max(2, maxval.bit_length())
    limit = 2 * (bpp + max(8, bpp))
    t1, t2, t3 = _params(maxval, near)
    step = 2 * near + 1
    a_init = max(2, (rng + 32) // 64)
    # Regular contexts 0..364 plus the two run-interruption contexts 365, 366.
    A = [a_init] * 367
    B = [0] * 365
    C = [0] * 365
    N = [1] * 367
    Nn = [0, 0]
    run_index = 0

    def quant(d: int) -> int:
        if d <= -t3:
            return -4
        if d <= -t2:
            return -3
        if d <= -t1:
            return -2
        if d < -near:
            return -1
        if d <= near:
            return 0
        if d < t1:
            return 1
        if d < t2:
            return 2
        if d < t3:
            return 3
        return 4

    def reduce(err: int) -> int:
        if err < 0:
            err += rng
        if err >= (rng + 1) // 2:
            err -= rng
        return err

    def quantise(err: int) -> int:
        if near == 0:
            return err
        return (near + err) // step if err > 0 else -((near - err) // step)

    def reconstruct(px: int, err: int) -> int:
        rx = px + err * step
        if rx < -near:
            rx += rng * step
        elif rx > maxval + near:
            rx -= rng * step
        return 0 if rx < 0 else maxval if rx > maxval else rx

    def golomb(value: int, k: int, lim: int) -> None:
        high = value >> k
        if high < lim - qbpp - 1:
            bits.zeros(high)
            bits.put(1, 1)
            if k:
                bits.put(value & ((1 << k) - 1), k)
        else:
            bits.zeros(lim - qbpp - 1)
            bits.put(1, 1)
            bits.put(value - 1, qbpp)

    prev = [0] * (w + 2)          # reconstructed line above, with one sample of padding each side
    src = plane.tolist()
    for y in range(h):
        row = src[y]
        cur = [0] * (w + 2)
        prev[w + 1] = prev[w]     # d at the last column is b
        cur[0] = prev[1]          # a at the first column is b; c there is the previous line's a
        x = 0
        while x < w:
            a, b, c, d = cur[x], prev[x + 1], prev[x], prev[x + 2]
            d1, d2, d3 = d - b, b - c, c - a
            if abs(d1) <= near and abs(d2) <= near and abs(d3) <= near:
                # Run mode: samples within `near` of a, then one interruption sample.
                run_val = a
                count = 0
                while x + count < w and abs(row[x + count] - run_val) <= near:
                    cur[x + count + 1] = run_val
                    count += 1
                end_of_line = x + count == w
                x += count
                while count >= (1 << _J[run_index]):
                    bits.put(1, 1)
                    count -= 1 << _J[run_index]
                    if run_index < 31:
                        run_index += 1
                if end_of_line:
                    if count:
                        bits.put(1, 1)
                    continue
                bits.put(0, 1)
                if _J[run_index]:
                    bits.put(count, _J[run_index])
                ix = row[x]
                ra, rb = run_val, prev[x + 1]
                ri_type = 1 if abs(ra - rb) <= near else 0
                px = ra if ri_type else rb
                sign = -1 if (not ri_type and ra > rb) else 1
                err = quantise((ix - px) * sign)
                cur[x + 1] = reconstruct(px, err * sign)
                err = reduce(err)
                q = 365 + ri_type
                temp = A[q] + (N[q] >> 1) * ri_type
                k = 0
                while (N[q] << k) < temp:
                    k += 1
                j = ri_type  # Nn index
                mapped = 1 if ((k == 0 and err > 0 and 2 * Nn[j] < N[q]) or (err < 0 and 2 * Nn[j] >= N[q])
                               or (err < 0 and k != 0)) else 0
                em = 2 * abs(err) - ri_type - mapped
                golomb(em, k, limit - _J[run_index] - 1)
                if err < 0:
                    Nn[j] += 1
                A[q] += (em + 1 - ri_type) >> 1
                if N[q] == _RESET:
                    A[q] >>= 1
                    N[q] >>= 1
                    Nn[j] >>= 1
                N[q] += 1
                if run_index > 0:
                    run_index -= 1
                x += 1
                continue
            # Regular mode.
            q1, q2, q3 = quant(d1), quant(d2), quant(d3)
            sign = 1
            if q1 < 0 or (q1 == 0 and (q2 < 0 or (q2 == 0 and q3 < 0))):
                q1, q2, q3, sign = -q1, -q2, -q3, -1
            q = 81 * q1 + 9 * q2 + q3
            if c >= max(a, b):
                px = min(a, b)
            elif c <= min(a, b):
                px = max(a, b)
            else:
                px = a + b - c
            px += C[q] if sign > 0 else -C[q]
            px = 0 if px < 0 else maxval if px > maxval else px
            err = quantise((row[x] - px) * sign)
            cur[x + 1] = reconstruct(px, err * sign)
            err = reduce(err)
            k = 0
            while (N[q] << k) < A[q]:
                k += 1
            if near == 0 and k == 0 and 2 * B[q] <= -N[q]:
                merr = 2 * err + 1 if err >= 0 else -2 * (err + 1)
            else:
                merr = 2 * err if err >= 0 else -2 * err - 1
            golomb(merr, k, limit)
            # Context update and bias correction (A.6).
            B[q] += err * step
            A[q] += abs(err)
            if N[q] == _RESET:
                A[q] >>= 1
                B[q] >>= 1
                N[q] >>= 1
            N[q] += 1
            if B[q] <= -N[q]:
                B[q] += N[q]
                if C[q] > -128:
                    C[q] -= 1
                if B[q] <= -N[q]:
                    B[q] = -N[q] + 1
            elif B[q] > 0:
                B[q] -= N[q]
                if C[q] < 127:
                    C[q] += 1
                if B[q] > 0:
                    B[q] = 0
            x += 1
        cur[w + 1] = cur[w]
        prev = cur


def encode_jpegls(arr: np.ndarray, bits_stored: int, near: int = 0) -> bytes:
    """One JPEG-LS codestream (SOI .. EOI) of an H x W or H x W x 3 unsigned image.

    `bits_stored` is the sample precision P (2..16); samples must lie in [0, 2**P).
    Components are coded in separate scans (ILV = 0) with the default parameters.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"encode_jpegls expects H x W or H x W x 3, got shape {arr.shape}")
    if not 2 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 2..16, got {bits_stored}")
    maxval = (1 << bits_stored) - 1
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > maxval):
        raise ValueError(f"samples must lie in [0, {maxval}]")
    if not 0 <= near <= min(255, maxval // 2):
        raise ValueError(f"near must be 0..{min(255, maxval // 2)}, got {near}")
    h, w, nc = arr.shape
    out = bytearray(b"\xff\xd8")
    sof = struct.pack(">BHHB", bits_stored, h, w, nc) + b"".join(bytes((i + 1, 0x11, 0)) for i in range(nc))
    out += b"\xff\xf7" + struct.pack(">H", len(sof) + 2) + sof
    for i in range(nc):
        sos = bytes((1, i + 1, 0, near, 0, 0))  # Ns, Cs, Tm, NEAR, ILV, point transform
        out += b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos
        bits = _Bits()
        _encode_plane(arr[..., i].astype(np.int64), maxval, near, bits)
        out += bits.flush()
    out += b"\xff\xd9"
    return bytes(out)
