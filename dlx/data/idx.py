"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in row-major order. Anything else is reported as a DataError naming
the file, never as a numpy reshape error.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from dlx.errors import DataError

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] not in _DTYPES or not 1 <= data[3] <= 4:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: header {dims} needs {expected} bytes of data, found {found}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as IDX (gzip if the name ends in .gz); used by tests and tools."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    array = np.ascontiguousarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_DTYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(payload) if str(path).endswith(".gz") else payload)
