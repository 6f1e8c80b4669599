"""Reading an ``.npz`` that may only hold plain arrays: numbers, and object arrays of ``str`` (the official DIFFER
release stores its image keys so). Object arrays are unpickled by an unpickler that can build nothing but numpy
arrays and dtypes, so a crafted file cannot run code; anything else is refused in one line."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from differ_common.errors import DataError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles an ndarray of plain Python objects; any other global (a function, a class) is refused."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _read_member(raw: bytes, path: Path, name: str) -> np.ndarray:
    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if not dtype.hasobject:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    what = f"{path}: {name!r} holds pickled objects that are not an array of strings"
    fix = "the official release holds only number arrays and string keys; download it again and do not use this file"
    if dtype != np.dtype(object):
        raise DataError(f"{what} (dtype {dtype}); {fix}")
    try:
        arr = _ArrayUnpickler(fh).load()
    except Exception as exc:  # noqa: BLE001 - refused globals and malformed pickles alike
        raise DataError(f"{what} ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != object or tuple(arr.shape) != tuple(shape):
        raise DataError(f"{what} (a {type(arr).__name__}); {fix}")
    if not all(isinstance(v, str) for v in arr.ravel().tolist()):
        raise DataError(f"{what} (non-string items); {fix}")
    return arr


def load_plain_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` of every member of the ``.npz`` at ``path``; a DataError for a file that is not an npz or
    holds anything but number/string arrays. Never executes code from the file."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                out[name] = _read_member(zf.read(info), path, name)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, header and format errors of any kind
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return out
