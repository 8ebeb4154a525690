"""Integrity of a trajectory file: the manifest of digests, and h5py errors turned into clear ones.

Two layers protect a file written by format 1.1:

- **Fletcher-32** (an HDF5 filter) on every chunked numeric dataset: observables, snapshot frames, their step and
  time columns, the numeric event columns. HDF5 checks it on every read of a chunk.
- **The manifest** ``/integrity/manifest``: JSON text (stored as a Fletcher-32-checked uint8 dataset) mapping each
  object's path to the SHA-256 of what Fletcher-32 cannot cover: every attribute (variable-length strings live in the
  file's global heap, which HDF5 does not checksum), every string dataset (event kinds, drugs, notes; the parameters
  and scenario text; summary strings) and every small contiguous dataset (coordinates, vessel sites, summary
  scalars), plus the shape and dtype of every dataset. The writer computes it by reading its own file back just
  before closing; :func:`abm.io.load` recomputes it and names the objects that differ.

HDF5's own metadata (object headers, B-trees, the superblock) carries checksums in the file-format versions the
writer asks for (``libver=("v110", ...)``), so damaged metadata fails to open rather than reading wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from typing import Any

import h5py
import numpy as np

from .errors import ChecksumError, DamagedTrajectoryError, TrajectoryReadError

MANIFEST = "integrity/manifest"
#: attributes that hold object references (dimension scales): their bytes are file addresses, not content
_SKIP_ATTRS = frozenset({"DIMENSION_LIST", "REFERENCE_LIST"})


def _canon(v: Any) -> Any:
    """A JSON-able canonical form of an attribute or dataset value."""
    if isinstance(v, h5py.Empty):
        return {"null": str(v.dtype)}
    if isinstance(v, bytes):
        return {"b": v.hex()}
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "OSU":
            return [_canon(x) for x in v.reshape(-1).tolist()] + [list(v.shape)]
        sha = hashlib.sha256(np.ascontiguousarray(v)).hexdigest()
        return {"dtype": v.dtype.str, "shape": list(v.shape), "sha": sha}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return {"f": repr(v)}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return {"repr": repr(v)}


def frame_crc32(values: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order) as stored: the writer's record of one frame of one dataset."""
    return zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1)) & 0xFFFFFFFF


def _is_checksummed(ds: h5py.Dataset) -> bool:
    return ds.chunks is not None and bool(ds.fletcher32)


def object_digest(obj: h5py.HLObject) -> str:
    """SHA-256 (hex) of an object's attributes and, where Fletcher-32 does not cover it, its content."""
    h = hashlib.sha256()
    items = []
    for name in sorted(obj.attrs.keys()):
        if name in _SKIP_ATTRS:
            continue
        items.append([name, _canon(obj.attrs[name])])
    if isinstance(obj, h5py.Dataset):
        shape = None if obj.shape is None else list(obj.shape)  # None: an HDF5 null (empty) dataset
        items.append(["__shape__", shape, obj.dtype.str if obj.dtype.kind != "O" else "vlen"])
        if not _is_checksummed(obj):
            if h5py.check_string_dtype(obj.dtype) is not None:
                data = obj.asstr()[()] if obj.shape is not None else obj[()]
                items.append(["__data__", _canon(data if isinstance(data, str) else np.asarray(data, dtype=object))])
            else:
                items.append(["__data__", _canon(obj[()])])
    h.update(json.dumps(items, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return h.hexdigest()


def compute_manifest(f: h5py.File) -> dict[str, str]:
    """Digest of every object in the file except the manifest itself (root included, as ``/``)."""
    names: list[str] = []
    f.visit(names.append)
    out = {"/": object_digest(f)}
    for name in sorted(names):
        if name == MANIFEST or name == "integrity":
            continue
        out[name] = object_digest(f[name])
    return out


def write_manifest(f: h5py.File) -> None:
    """Compute and store the manifest (the last thing a writer does before closing)."""
    if MANIFEST in f:
        del f[MANIFEST]
    text = json.dumps({"algorithm": "sha256", "objects": compute_manifest(f)}, sort_keys=True).encode("utf-8")
    g = f.require_group("integrity")
    g.attrs["description"] = "SHA-256 of every object's attributes and unchecksummed content; see docs/output-format.md"
    data = np.frombuffer(text, dtype=np.uint8)
    g.create_dataset("manifest", data=data, chunks=(max(1, min(len(data), 65536)),), fletcher32=True)


def verify_manifest(f: h5py.File, path: Any) -> bool:
    """Check the stored manifest against the file; False when the file has none (an unclosed or 1.0 file).

    Raises :class:`ChecksumError` naming the objects that differ, were added or are missing.
    """
    if MANIFEST not in f:
        return False
    try:
        raw = f[MANIFEST][()].tobytes()
        stored = json.loads(raw.decode("utf-8"))["objects"]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ChecksumError(f"{path}: the integrity manifest {MANIFEST} is unreadable ({_short(e)})", path) from None
    try:
        now = compute_manifest(f)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise DamagedTrajectoryError(f"{path}: unreadable object while verifying ({_short(e)})", path) from None
    bad = sorted(k for k in stored.keys() | now.keys() if stored.get(k) != now.get(k))
    if bad:
        shown = ", ".join("/" + k.lstrip("/") for k in bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise ChecksumError(
            f"{path}: damaged: {len(bad)} object(s) do not match the digests stored when the file was written: {shown}",
            path,
        )
    return True


def _short(e: BaseException) -> str:
    """The first line of an h5py error, without HDF5's long 'file write failed: time = ...' tail."""
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"\s*\(file (?:read|write) failed: time = .*", "", s)[:300]


def read_error(e: BaseException, path: Any, what: str) -> TrajectoryReadError:
    """An h5py exception raised while reading ``what`` as a clear abm error."""
    msg = str(e)
    if "filter returned failure" in msg or "checksum" in msg.lower():
        return ChecksumError(f"{path}: damaged: {what} fails its checksum ({_short(e)})", path)
    return DamagedTrajectoryError(f"{path}: damaged: cannot read {what} ({_short(e)})", path)


def errno_of(e: BaseException) -> int | None:
    """errno of an OSError, or the one HDF5 quotes in its message (``errno = 28``)."""
    n = getattr(e, "errno", None)
    if isinstance(n, int) and n:
        return n
    m = re.search(r"errno = (\d+)", str(e))
    return int(m.group(1)) if m else None
