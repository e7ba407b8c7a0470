"""Structure-aware fuzzing of the readers: valid seed files, mutations that know each format's
structure, and what each reader must do with the result.

Shared by test_fuzz_readers.py (a short derandomised run under hypothesis) and
scripts/fuzz_readers.py (the long run, each case in a process of its own). Mutations draw every
choice through a `Draw`, so the same code runs on hypothesis's data (which shrinks a failure to
a small example) and on a seeded `random.Random` (which replays a case from its number).

A module of its own (not conftest.py), like rig_builders.py: the script imports it by name.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from rig_builders import make_tube_rig, random_avatar

from lca_blender.avatar import OUTER_LAYER, SKIN_LAYER, Pose, Splats
from lca_blender.errors import AvatarError
from lca_blender.formats import lca, ply

T = TypeVar("T")
MAX_CASE_BYTES = 8 * 1024**2  # mutations never grow a case beyond this (the readers' caps are tested apart)


@dataclass(frozen=True)
class Outcome:
    """What a reader did with a case: its kind ('loaded', 'refused', ...) and the refusal's message."""

    kind: str
    message: str = ""


class Draw(Protocol):
    """Where a mutation takes its choices from."""

    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def blob(self, low: int, high: int) -> bytes: ...


@dataclass
class RandomDraw:
    """Choices from a seeded random.Random (the long run: case k replays from seed + k)."""

    rng: random.Random

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def blob(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))


# ---------------------------------------------------------------------------------------------
# Generic values and bytes

_EDGE_INTEGERS = (
    0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095, 4096, 32767, 32768,
    65535, 65536, 2**24 - 1, 2**24, 2**30, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**33, 2**53, 2**63 - 1,
    2**64 - 1,
)  # fmt: skip
_EDGE_FLOATS = (
    math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 0.5, 1e-7, 1e-30, 1e-38, 1e-45, 5e-324, 1e-300,
    1e-160, 1e38, 3.4e38, 1e39, 1e154, 1e155, 1e300, 1.7e308, 88.8, 89.0, -88.8, -104.0, -745.0, 710.0, 1e5,
)  # fmt: skip


def field_value(draw: Draw, original: int, bits: int, signed: bool = False) -> int:
    """A new value for an integer field of `bits` bits: an edge value, near the original, random."""
    kind = draw.integer(0, 4)
    if kind == 0:
        value = draw.choice(_EDGE_INTEGERS)
    elif kind == 1:
        value = original + draw.integer(-16, 16)
    elif kind == 2:
        value = original * draw.choice((2, 4, 16, 256, 4096, 65536))
    elif kind == 3:
        value = draw.integer(0, 2**bits - 1)
    else:
        value = (2**bits - 1) - draw.integer(0, 3)
    value %= 2**bits
    if signed and value >= 2 ** (bits - 1):
        value -= 2**bits
    return value


def mutate_bytes(draw: Draw, data: bytes, start: int = 0, end: int | None = None) -> bytes:
    """Flip, overwrite, insert, delete, repeat or cut bytes within data[start:end]."""
    end = len(data) if end is None else end
    if end <= start:
        return data + draw.blob(1, 16)
    at = draw.integer(start, end - 1)
    kind = draw.integer(0, 6)
    if kind == 0:  # flip a bit
        return data[:at] + bytes([data[at] ^ (1 << draw.integer(0, 7))]) + data[at + 1 :]
    if kind == 1:  # overwrite
        patch = draw.blob(1, 8)
        return data[:at] + patch + data[at + len(patch) :]
    if kind == 2:  # insert
        return data[:at] + draw.blob(1, 64) + data[at:]
    if kind == 3:  # delete
        return data[:at] + data[at + draw.integer(1, 256) :]
    if kind == 4:  # repeat a slice
        stop = min(end, at + draw.integer(1, 512))
        return data[:stop] + data[at:stop] * draw.integer(1, 8) + data[stop:]
    if kind == 5:  # cut the file short
        return data[:at]
    return data[:at] + bytes([draw.choice((0x00, 0xFF, 0x7F, 0x80))]) * draw.integer(1, 8) + data[at + 1 :]


def _pack_field(data: bytes, offset: int, fmt: str, draw: Draw) -> bytes:
    """data with the struct field `fmt` at `offset` given a new value."""
    size = struct.calcsize(fmt)
    if offset + size > len(data):
        return data
    (original,) = struct.unpack_from(fmt, data, offset)
    signed = fmt[-1].islower() and fmt[-1] not in "sp"
    value = field_value(draw, int(original), 8 * size, signed)
    return data[:offset] + struct.pack(fmt, value) + data[offset + size :]


# ---------------------------------------------------------------------------------------------
# .lca: a zip of a JSON manifest and .npy arrays


def lca_seeds(folder: Path) -> list[Path]:
    """Valid .lca files: an avatar with UVs, an avatar whose rig has an outer layer (schema 2) and
    no UVs, and a rig alone."""
    folder.mkdir(parents=True, exist_ok=True)
    rig = make_tube_rig(rings=6, segments=6)
    avatar = random_avatar(rig, 120, sh_degree=1)
    layered = random_avatar(make_tube_rig(rings=6, segments=6), 80, seed=3, sh_degree=0)
    layers = np.full(layered.rig.vertex_count, SKIN_LAYER, np.int32)
    layers[-6:] = OUTER_LAYER
    layered.rig.vertex_layers = layers
    layered.rig.uvs = layered.rig.triangle_uvs = None
    paths = [folder / "avatar.lca", folder / "layered.lca", folder / "rig.lca"]
    lca.write_avatar(paths[0], avatar)
    lca.write_avatar(paths[1], layered)
    lca.write_rig(paths[2], rig)
    return paths


@dataclass
class _Entry:
    name: str
    data: bytes
    compression: int


def _read_entries(data: bytes) -> list[_Entry]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [_Entry(info.filename, archive.read(info), info.compress_type) for info in archive.infolist()]


def _write_entries(entries: list[_Entry]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": two entries of one name are a mutation
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = entry.compression
            archive.writestr(info, entry.data)
    return buffer.getvalue()


_RAW = "\u0000raw{}\u0000"  # a placeholder for JSON text json.dumps cannot write
_RAW_JSON = (
    "1" * 5000, "-" + "9" * 4400, "1e400", "-1e400", "NaN", "Infinity", "-0", "0.0", "1E+2",
    "[" * 3000 + "]" * 3000, '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "[" * 40 + "]" * 40,
    '{"a":' * 40 + "1" + "}" * 40, "true",
    "null", '"' + "x" * 100_000 + '"', "[" + ",".join(["0"] * 20000) + "]", "4294967296", "-1",
)  # fmt: skip
_JSON_VALUES: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 2, 3, 4, 120, 2**31, 2**63, 10**30, 0.5, math.nan, math.inf, "", "x",
    "avatar", "rig", "lca", "<f4", "<i4", ">f4", "<f8", "|O", [], [0], [1, 2], [[1]], {}, {"a": 1},
    ["a", "a"],
    [-1, 3], [0, 0, 0], [4, 4, 4, 4],
)  # fmt: skip


def _json_paths(value: Any, path: tuple = ()) -> list[tuple]:
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:8]):
            paths += _json_paths(item, (*path, index))
    return paths


def _mutate_manifest(draw: Draw, entries: list[_Entry]) -> str:
    entry = next((e for e in entries if e.name == lca.MANIFEST_NAME), None)
    if entry is None:
        return "manifest: none"
    try:
        manifest = json.loads(entry.data)
        path = draw.choice(_json_paths(manifest)[1:])
    except (ValueError, RecursionError, IndexError):  # an earlier mutation broke or emptied it
        entry.data = mutate_bytes(draw, entry.data)
        return "manifest: bytes"
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    kind = draw.integer(0, 5)
    raw = None
    if kind == 0:
        del parent[key]
        action = "delete"
    elif kind == 1:
        raw = draw.choice(_RAW_JSON)
        parent[key] = _RAW.format(0)
        action = f"raw {raw[:20]!r}"
    elif kind == 2 and isinstance(parent[key], list) and parent[key]:
        parent[key] = parent[key] + parent[key][: draw.integer(1, len(parent[key]))]
        action = "extend"
    elif kind == 3 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] = field_value(draw, parent[key], 64, signed=True)
        action = f"integer {parent[key]}"
    elif kind == 4 and isinstance(parent, dict):
        parent[key + "_" if isinstance(key, str) else key] = parent.pop(key)
        action = "rename"
    else:
        parent[key] = draw.choice(_JSON_VALUES)
        action = f"value {parent[key]!r}"
    text = json.dumps(manifest)
    if raw is not None:
        text = text.replace(json.dumps(_RAW.format(0)), raw)
    entry.data = text.encode("utf-8", "surrogatepass")
    return f"manifest {'/'.join(map(str, path))}: {action}"


def _npy_parts(data: bytes) -> tuple[bytes, str, bytes] | None:
    """(prefix up to the header text, header text, array bytes), or None if not a v1 .npy."""
    if len(data) < 10 or data[:6] != b"\x93NUMPY" or data[6] != 1:
        return None
    length = int.from_bytes(data[8:10], "little")
    return data[:10], data[10 : 10 + length].decode("latin1"), data[10 + length :]


_NPY_HEADERS = (
    "{1}", "{{}: 1}", "{'descr': '<f4', 'fortran_order': False, 'shape': {1, 2}, }", "(" * 300, "1" * 5000,
    "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1," * 64 + "), }", "\x00",
    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }",
    "{'descr': 'O', 'fortran_order': False, 'shape': (1,), }",
    "__import__('os')", "{'descr': '<f4', 'fortran_order': False, 'shape': (10**10,), }", "[1, 2]", "",
)  # fmt: skip


def _mutate_npy(draw: Draw, entries: list[_Entry]) -> str:
    arrays = [e for e in entries if e.name.endswith(".npy")]
    if not arrays:
        return "npy: none"
    entry = draw.choice(arrays)
    parts = _npy_parts(entry.data)
    if parts is None:
        entry.data = mutate_bytes(draw, entry.data, 0, 16)
        return f"npy {entry.name}: bytes"
    prefix, header, body = parts
    kind = draw.integer(0, 5)
    if kind == 0:
        header = draw.choice(_NPY_HEADERS)
        action = f"header {header[:20]!r}"
    elif kind == 1:
        descr = draw.choice(("<f8", ">f4", "<i8", "|b1", "<U5", "V8", "<f2", "<c8", "|u1", "<i4", "<f4"))
        header = re.sub(r"'descr': '[^']*'", f"'descr': '{descr}'", header)
        action = f"descr {descr}"
    elif kind == 2:
        order = draw.choice(("True", "1", "None", "'x'"))
        header = header.replace("False", order)
        action = f"fortran_order {order}"
    elif kind == 3 and "'shape': (" in header:
        numbers = [int(n) for n in re.findall(r"\d+", header.split("'shape':")[1])] or [0]
        index = draw.integer(0, len(numbers) - 1)
        numbers[index] = field_value(draw, numbers[index], 40)
        shape = "(" + ", ".join(map(str, numbers)) + ("," if len(numbers) == 1 else "") + ")"
        header = re.sub(r"'shape': \([^)]*\)", f"'shape': {shape}", header)
        action = f"shape {shape}"
    elif kind == 4:
        prefix = prefix[:6] + bytes([draw.choice((0, 2, 3, 4, 255)), prefix[7]]) + prefix[8:]
        action = f"version {prefix[6]}"
    else:
        prefix = _pack_field(prefix, 8, "<H", draw)
        entry.data = prefix + header.encode("latin1", "replace") + body
        return f"npy {entry.name}: header length"
    encoded = header.encode("latin1", "replace")
    entry.data = prefix[:8] + struct.pack("<H", len(encoded) % 65536) + encoded + body
    return f"npy {entry.name}: {action}"


def _mutate_values(draw: Draw, entries: list[_Entry]) -> str:
    """Edge values written into an array's elements (the .npy stays well formed)."""
    arrays = [e for e in entries if e.name.endswith(".npy")]
    if not arrays:
        return "values: none"
    entry = draw.choice(arrays)
    try:
        array = np.load(io.BytesIO(entry.data), allow_pickle=False).copy()
    except Exception:  # an earlier mutation broke it
        return f"values {entry.name}: unreadable"
    if array.size == 0 or array.dtype.kind not in "fiub":  # an earlier mutation made it structured
        return f"values {entry.name}: none to change"
    flat = array.reshape(-1)
    count = draw.choice((1, 1, 2, 4, flat.size))
    if array.dtype.kind == "f":
        value = draw.choice(_EDGE_FLOATS)
    else:
        value = field_value(draw, int(flat[0]), 32, signed=True)
    start = draw.integer(0, flat.size - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        if count == flat.size and array.ndim > 1 and draw.integer(0, 1):
            column = draw.integer(0, array.shape[-1] - 1)
            array[..., column] = value
            where = f"column {column}"
        else:
            flat[start : start + count] = value
            where = f"{count} at {start}"
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    entry.data = buffer.getvalue()
    return f"values {entry.name}: {where} = {value!r}"


def _mutate_entries(draw: Draw, entries: list[_Entry]) -> str:
    kind = draw.integer(0, 5)
    entry = draw.choice(entries)
    if kind == 0:
        entries.remove(entry)
        return f"entry {entry.name}: dropped"
    if kind == 1:
        entries.append(_Entry(entry.name, entry.data[: draw.integer(0, len(entry.data))], entry.compression))
        return f"entry {entry.name}: twice"
    if kind == 2:
        method = draw.choice((zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))
        entry.compression = method
        return f"entry {entry.name}: compression {method}"
    if kind == 3:
        entry.name = draw.choice(("", "/", "../x.npy", entry.name.upper(), entry.name + "\x00", "é.npy"))
        return f"entry renamed {entry.name!r}"
    if kind == 4:
        for index in range(draw.choice((1, 10, 300))):
            entries.append(_Entry(f"extra/{index}", b"", zipfile.ZIP_STORED))
        return "entries: extra"
    draw_order = draw.integer(0, len(entries) - 1)
    entries.insert(0, entries.pop(draw_order))
    return "entries: reordered"


# Zip record layouts: signature -> [(offset, struct format)] of the fields worth mutating.
_ZIP_FIELDS = {
    b"PK\x03\x04": [(4, "<H"), (6, "<H"), (8, "<H"), (14, "<I"), (18, "<I"), (22, "<I"), (26, "<H"),
                    (28, "<H")],
    b"PK\x01\x02": [(4, "<H"), (6, "<H"), (8, "<H"), (10, "<H"), (16, "<I"), (20, "<I"), (24, "<I"),
                    (28, "<H"), (30, "<H"), (32, "<H"), (34, "<H"), (42, "<I")],
    b"PK\x05\x06": [(4, "<H"), (6, "<H"), (8, "<H"), (10, "<H"), (12, "<I"), (16, "<I"), (20, "<H")],
}  # fmt: skip


def _mutate_zip_headers(draw: Draw, data: bytes) -> tuple[bytes, str]:
    """A field of a local header, central directory record or end record given a new value; a
    size field is sometimes changed in both the central record and the local header, as a
    deliberate liar would."""
    records = [
        (match.start(), signature)
        for signature in _ZIP_FIELDS
        for match in re.finditer(re.escape(signature), data)
    ]
    if not records:
        return mutate_bytes(draw, data), "zip: bytes"
    start, signature = draw.choice(records)
    offset, fmt = draw.choice(_ZIP_FIELDS[signature])
    mutated = _pack_field(data, start + offset, fmt, draw)
    if signature == b"PK\x01\x02" and offset == 24 and draw.integer(0, 1):
        # The uncompressed size in the local header too (central +24 is local +22).
        local = int.from_bytes(data[start + 42 : start + 46], "little")
        value = mutated[start + 24 : start + 28]
        if data[local : local + 4] == b"PK\x03\x04":
            mutated = mutated[: local + 22] + value + mutated[local + 26 :]
    return mutated, f"zip {signature[2:].hex()} +{offset} {fmt}"


# Values most often: a file that stays readable reaches the data-model checks and posing.
_LCA_MUTATIONS = (
    _mutate_manifest,
    _mutate_npy,
    _mutate_values,
    _mutate_values,
    _mutate_values,
    _mutate_entries,
)


def honest_bomb(path: Path, seed: Path, inflated_bytes: int) -> None:
    """An .lca whose manifest and headers tell the truth about rig arrays of deflated zeros that
    inflate to about `inflated_bytes`: as large as the caps allow a reader to go (`seed`, a valid
    .lca, gives the rest)."""
    with zipfile.ZipFile(seed) as source:
        manifest = json.loads(source.read(lca.MANIFEST_NAME))
        entries = {info.filename: source.read(info) for info in source.infolist()}
    expressions = 64
    vertices = max(1, inflated_bytes // (4 * 3 * (expressions + 1)))
    manifest["rig"]["expression_names"] = [f"shape{index}" for index in range(expressions)]
    grown = {}
    for name, (dtype, symbols) in lca.RIG_ARRAYS.items():
        key = f"rig/{name}"
        if key in manifest["arrays"] and "V" in symbols:
            shape = [
                vertices if s == "V" else expressions if s == "E" else n
                for s, n in zip(symbols, manifest["arrays"][key]["shape"], strict=True)
            ]
            manifest["arrays"][key]["shape"] = shape
            grown[f"arrays/{key}.npy"] = (dtype, tuple(shape))
    zeros = bytes(16 * 1024**2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(lca.MANIFEST_NAME, json.dumps(manifest))
        for name, data in entries.items():
            if name == lca.MANIFEST_NAME:
                continue
            if name not in grown:
                archive.writestr(name, data)
                continue
            dtype, shape = grown[name]
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": dtype, "fortran_order": False, "shape": shape}
            )
            with archive.open(name, "w", force_zip64=True) as entry:
                entry.write(header.getvalue())
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                while left:
                    entry.write(zeros[: min(left, len(zeros))])
                    left -= min(left, len(zeros))


def mutate_lca(draw: Draw, seed: bytes) -> tuple[bytes, list[str]]:
    """One to three mutations of a valid .lca file, structural first, then at the byte level."""
    entries = _read_entries(seed)
    done = []
    for _ in range(draw.choice((1, 1, 2, 3))):
        mutation = draw.choice(_LCA_MUTATIONS)
        if entries:
            done.append(mutation(draw, entries))
    data = _write_entries(entries)
    kind = draw.integer(0, 5)
    if kind == 0:
        data, what = _mutate_zip_headers(draw, data)
        done.append(what)
    elif kind == 1:
        data = mutate_bytes(draw, data)
        done.append("bytes")
    return data[:MAX_CASE_BYTES], done


def check_lca(path: Path) -> Outcome:
    """Read an .lca as the readers' users do: 'loaded' (an avatar), 'rig' (only a rig loads) or
    'refused' (an AvatarError). What loads must also describe itself as `lca-avatar info` does
    and pose; 'refused when posed' means posing met a problem that reading let through."""
    from lca_blender.cli import describe
    from lca_blender.maths.deform import pose_avatar, pose_vertices

    try:
        avatar, refusal = lca.read_avatar(path), ""
    except AvatarError as error:  # its traceback, which holds what was read, goes with this block
        avatar, refusal = None, str(error)
    if avatar is None:
        try:
            rig = lca.read_rig(path)
        except AvatarError as error:
            return Outcome("refused", str(error))
        expressions = np.full(len(rig.expression_names), 0.5, np.float32)
        try:
            pose_vertices(rig, _random_pose(rig.joint_count), expressions)
        except AvatarError as error:
            return Outcome("refused when posed", str(error))
        return Outcome("rig", refusal)
    json.dumps(describe(path), indent=2, ensure_ascii=False).encode("utf-8")
    expressions = np.full(len(avatar.rig.expression_names), 0.5, np.float32)
    try:
        posed = (pose_avatar(avatar), pose_avatar(avatar, _random_pose(avatar.rig.joint_count), expressions))
    except AvatarError as error:
        return Outcome("refused when posed", str(error))
    for splats in posed:
        _check_splats(splats)
    return Outcome("loaded")


def _random_pose(joint_count: int) -> Pose:
    rotations = np.random.default_rng(0).standard_normal((joint_count, 4))
    rotations /= np.linalg.norm(rotations, axis=1, keepdims=True)
    return Pose(rotations.astype(np.float32), np.array([0.1, 0.0, 0.0], np.float32))


def _check_splats(splats: Splats) -> None:
    norms = np.linalg.norm(splats.rotations.astype(np.float64), axis=1)
    assert np.all(np.abs(norms - 1) < 1e-3), "splat rotations are not unit quaternions"


# ---------------------------------------------------------------------------------------------
# .ply: a text header and binary rows

_PLY_PROPERTY = re.compile(rb"property (\w+) (\S+)")


def ply_seeds(folder: Path) -> list[Path]:
    """Valid 3DGS .ply files: ours at SH degrees 0 and 3, and other writers' layouts (big-endian,
    doubles, extra uchar colours and normals, an empty face element, CRLF line ends)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for coefficients in (1, 16):
        count = 40
        rotations = rng.standard_normal((count, 4))
        splats = Splats(
            means=rng.standard_normal((count, 3)).astype(np.float32),
            rotations=(rotations / np.linalg.norm(rotations, axis=1, keepdims=True)).astype(np.float32),
            scales=rng.uniform(0.01, 0.1, (count, 3)).astype(np.float32),
            opacities=rng.uniform(0.1, 0.9, count).astype(np.float32),
            sh=rng.standard_normal((count, coefficients, 3)).astype(np.float32),
        )
        path = folder / f"ours_{coefficients}.ply"
        ply.write_ply(path, splats)
        paths.append(path)
    base = paths[0].read_bytes()
    header_end = base.index(b"end_header\n") + len(b"end_header\n")
    names = [m.group(2).decode() for m in _PLY_PROPERTY.finditer(base[:header_end])]
    rows = np.frombuffer(base[header_end:], dtype=[(n, "<f4") for n in names])
    variants = {
        "big_endian.ply": (">", {}, b"", b"\n"),
        "doubles.ply": ("<", {n: "f8" for n in names}, b"", b"\n"),
        "mixed.ply": ("<", {"nx": "u1", "ny": "u1", "nz": "u1", "rot_0": "f8", "x": "f8"}, b"", b"\n"),
        "face.ply": ("<", {}, b"element face 0\nproperty list uchar int vertex_indices\n", b"\n"),
        "crlf.ply": ("<", {}, b"", b"\r\n"),
    }
    for name, (endian, types, extra, newline) in variants.items():
        dtype = [(n, endian + types.get(n, "f4")) for n in names]
        table = np.empty(len(rows), dtype=dtype)
        for field_name in names:
            table[field_name] = rows[field_name]
        type_names = {"f4": "float", "f8": "double", "u1": "uchar"}
        lines = [b"ply", f"format binary_{'little' if endian == '<' else 'big'}_endian 1.0".encode()]
        lines += [b"comment fuzz seed", f"element vertex {len(rows)}".encode()]
        lines += [f"property {type_names[types.get(n, 'f4')]} {n}".encode() for n in names]
        header = newline.join(lines) + newline + extra.replace(b"\n", newline) + b"end_header" + newline
        path = folder / name
        path.write_bytes(header + table.tobytes())
        paths.append(path)
    return paths


_PLY_TOKENS = (
    b"0", b"1", b"-1", b"40", b"41", b"39", b"1e3", b"0x10", b"99999999999999999999", b"1" * 5000,
    b"50000001", b"float", b"double", b"int", b"uchar", b"list", b"float128", b"", b"\x00", b"\xff", b"x",
    b"rot_0", b"f_rest_44", b"f_rest_9999999", b"vertex", b"face", b"chunk", b"ascii", b"binary_big_endian",
    b"2.0", b"element", b"property",
)  # fmt: skip
_PLY_LINES = (
    b"element face 10", b"element face 0", b"property list uchar int vertex_indices", b"comment \x0c\x0b\x1c",
    b"format ascii 1.0", b"obj_info x", b"element chunk 1", b"property float f_rest_0", b"property float x",
    b"element vertex 1", b"end_header", b"ply", b"property double rot_0",
)  # fmt: skip


def mutate_ply(draw: Draw, seed: bytes) -> tuple[bytes, list[str]]:
    """One to three mutations of a .ply's header lines, counts, row values or bytes."""
    end = re.search(rb"end_header\r?\n", seed)
    header_end = end.end() if end else len(seed)
    newline = b"\r\n" if b"\r\n" in seed[:header_end] else b"\n"
    lines = seed[:header_end].split(newline)[:-2]  # without 'end_header' and what follows its newline
    data = seed[header_end:]
    done = []
    for _ in range(draw.choice((1, 1, 2, 3))):
        # Row values most often: a file that stays readable reaches the conversions.
        kind = draw.choice((0, 1, 2, 3, 4, 4, 4, 4, 5, 6))
        if kind <= 1 and len(lines) > 2:  # one token of one line
            index = draw.integer(1, len(lines) - 2)
            tokens = lines[index].split(b" ")
            position = draw.integer(0, len(tokens) - 1)
            tokens[position] = draw.choice(_PLY_TOKENS)
            lines[index] = b" ".join(tokens)
            done.append(f"line {index} token {position}")
        elif kind == 2:  # a line deleted, repeated or inserted
            index = draw.integer(1, max(1, len(lines) - 1))
            action = draw.integer(0, 2)
            if action == 0 and len(lines) > 2:
                del lines[index]
            elif action == 1:
                lines.insert(index, lines[min(index, len(lines) - 1)])
            else:
                lines.insert(index, draw.choice(_PLY_LINES))
            done.append(f"line {index} {('deleted', 'repeated', 'inserted')[action]}")
        elif kind == 3:  # the vertex count, with the data cut or padded to match it
            data, count = _recount(draw, lines, data)
            done.append(f"count {count}")
        elif kind == 4:  # edge values in rows
            data = _ply_values(draw, lines, data)
            done.append("values")
        elif kind == 5:
            data = mutate_bytes(draw, data) if data else data
            done.append("data bytes")
        else:
            header = mutate_bytes(draw, newline.join(lines) + newline)
            lines = header.split(newline)[:-1] if header.endswith(newline) else header.split(newline)
            done.append("header bytes")
    result = newline.join([*lines, b"end_header"]) + newline + data
    return result[:MAX_CASE_BYTES], done


def _row_layout(lines: list[bytes]) -> tuple[np.dtype, int] | None:
    """The vertex row dtype and count the header lines describe, if they still do."""
    types = {b"float": "f4", b"double": "f8", b"uchar": "u1", b"int": "i4"}
    endian = ">" if any(b"big_endian" in line for line in lines) else "<"
    fields, count, in_vertex = [], None, False
    for line in lines:
        tokens = line.split()
        if len(tokens) == 3 and tokens[0] == b"element":
            in_vertex = tokens[1] == b"vertex"
            if in_vertex and tokens[2].isdigit() and len(tokens[2]) < 10:
                count = int(tokens[2])
        elif in_vertex and len(tokens) == 3 and tokens[0] == b"property" and tokens[1] in types:
            fields.append((tokens[2].decode("latin1"), endian + types[tokens[1]]))
    names = [name for name, _ in fields]
    if count is None or not fields or len(set(names)) != len(names):
        return None
    return np.dtype(fields), count


def _recount(draw: Draw, lines: list[bytes], data: bytes) -> tuple[bytes, int]:
    layout = _row_layout(lines)
    for index, line in enumerate(lines):
        if line.startswith(b"element vertex"):
            count = draw.choice((0, 1, 2, 39, 41, 1000, 50_000_000, 50_000_001))
            lines[index] = b"element vertex %d" % count
            if layout is not None and count * layout[0].itemsize <= MAX_CASE_BYTES:
                wanted = count * layout[0].itemsize
                data = (data * (wanted // max(1, len(data)) + 1))[:wanted]
            return data, count
    return data, -1


def _ply_values(draw: Draw, lines: list[bytes], data: bytes) -> bytes:
    layout = _row_layout(lines)
    if layout is None or layout[1] * layout[0].itemsize != len(data) or not layout[1]:
        return mutate_bytes(draw, data) if data else data
    dtype, count = layout
    rows = np.frombuffer(data, dtype=dtype).copy()
    quaternion = ["rot_0", "rot_1", "rot_2", "rot_3"]
    names = draw.choice(([draw.choice(dtype.names)], quaternion, ["scale_0"], ["opacity"]))
    value = draw.choice(_EDGE_FLOATS)
    which = slice(None) if draw.integer(0, 1) else slice(draw.integer(0, count - 1), None, draw.integer(1, 7))
    with np.errstate(over="ignore", invalid="ignore"):
        for name in names:
            if name in dtype.names:
                column = rows[name]
                column[which] = np.array(value).astype(column.dtype)
    return rows.tobytes()


def check_ply(path: Path) -> Outcome:
    """'loaded' (and the splats' rotations are unit quaternions) or 'refused'."""
    try:
        splats = ply.read_ply(path)
    except AvatarError as error:
        return Outcome("refused", str(error))
    _check_splats(splats)
    return Outcome("loaded")


# ---------------------------------------------------------------------------------------------
# Photos: PNG chunks, JPEG segments, TIFF directories, WebP and BMP headers


def _test_picture(width: int = 40, height: int = 30, mode: str = "RGB"):
    from PIL import Image

    rng = np.random.default_rng(width * height)
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, 255 - x], axis=2) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)


def image_seeds(folder: Path) -> list[Path]:
    """Small valid photos in every format and layout ingest reads, a few with EXIF orientation,
    and a few in formats it must refuse (GIF, PPM, TGA, ICO, EPS)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Fuzz"
    base = _test_picture()
    sixteen = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16))
    palette = base.convert("P")
    palette.info["transparency"] = 0
    saves: dict[str, tuple[Any, dict]] = {
        "rgb.png": (base, {}),
        "rgba.png": (base.convert("RGBA"), {"exif": exif.tobytes()}),
        "grey16.png": (sixteen, {}),
        "palette.png": (palette, {}),
        "baseline.jpg": (base, {"quality": 90, "exif": exif.tobytes()}),
        "progressive.jpg": (base, {"quality": 80, "progressive": True}),
        "cmyk.jpg": (base.convert("CMYK"), {}),
        "grey.jpg": (base.convert("L"), {"subsampling": 0}),
        "raw.tif": (base, {}),
        "lzw.tif": (base, {"compression": "tiff_lzw", "exif": exif.tobytes()}),
        "deflate_strips.tif": (base, {"compression": "tiff_adobe_deflate", "rowsperstrip": 8}),
        "grey16.tif": (sixteen, {}),
        "lossy.webp": (base, {"quality": 70}),
        "lossless.webp": (base.convert("RGBA"), {"lossless": True}),
        "rgb.bmp": (base, {}),
        "palette.bmp": (base.convert("P"), {}),
        "refused.gif": (base, {}),
        "refused.ppm": (base, {}),
        "refused.tga": (base, {}),
        "refused.ico": (base, {}),
    }
    paths = []
    for name, (picture, options) in saves.items():
        path = folder / name
        picture.save(path, **options)
        paths.append(path)
    eps = folder / "refused.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 30\nshowpage\n%%EOF\n")
    paths.append(eps)
    return paths


def _png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, data) of each chunk of a PNG, as far as its lengths can be followed."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append((at, data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


_PNG_CHUNK_TYPES = (
    b"eXIf", b"iCCP", b"zTXt", b"iTXt", b"tRNS", b"PLTE", b"acTL", b"fcTL", b"IDAT", b"IHDR", b"sBIT",
    b"pHYs", b"IEND",
)  # fmt: skip


def _mutate_png(draw: Draw, data: bytes) -> tuple[bytes, str]:
    chunks = _png_chunks(data)
    if not chunks:
        return mutate_bytes(draw, data), "png bytes"
    at, kind, body = draw.choice(chunks)
    end = at + 12 + len(body)
    action = draw.integer(0, 5)
    if action == 0:  # the length field
        return _pack_field(data, at, ">I", draw), f"png {kind!r} length"
    if action == 1 and kind == b"IHDR" and len(body) == 13:  # width, height, depth, colour type
        field = draw.choice(((0, ">I"), (4, ">I"), (8, "B"), (9, "B"), (10, "B"), (11, "B"), (12, "B")))
        body = _pack_field(body, field[0], field[1], draw)
        what = f"IHDR +{field[0]}"
    elif action == 2:  # a chunk inserted before this one
        new_kind = draw.choice(_PNG_CHUNK_TYPES)
        payload = _tiff_blob(draw) if new_kind == b"eXIf" else draw.blob(0, 64)
        if new_kind == b"zTXt":
            payload = b"k\x00\x00" + zlib.compress(b"\x00" * draw.choice((10, 10**6, 10**7)))
        return data[:at] + _png_chunk(new_kind, payload) + data[at:], f"png + {new_kind!r}"
    elif action == 3:  # the chunk dropped or repeated
        if draw.integer(0, 1):
            return data[:at] + data[end:], f"png - {kind!r}"
        return data[:end] + data[at:end] + data[end:], f"png {kind!r} twice"
    else:  # its body's bytes (eXIf bodies mutated as TIFF)
        body = _mutate_tiff(draw, body)[0] if kind == b"eXIf" else mutate_bytes(draw, body) if body else body
        what = f"png {kind!r} body"
    # Mostly with a right CRC, so the decoder gets past the check to what the change breaks.
    fixed = _png_chunk(kind, body)
    if draw.integer(0, 4) == 0:
        fixed = fixed[:-4] + b"\0" * 4
    return data[:at] + fixed + data[end:], what


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, marker, length) of the JPEG segments before the first scan's data."""
    segments, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        segments.append((at, marker, length))
        if marker == 0xDA:
            break
        at += 2 + length
    return segments


def _mutate_jpeg(draw: Draw, data: bytes) -> tuple[bytes, str]:
    segments = _jpeg_segments(data)
    if not segments:
        return mutate_bytes(draw, data), "jpeg bytes"
    at, marker, length = draw.choice(segments)
    action = draw.integer(0, 4)
    if action == 0 or marker not in (0xC0, 0xC2, 0xE1):
        if draw.integer(0, 1):
            return _pack_field(data, at + 2, ">H", draw), f"jpeg {marker:02x} length"
        return mutate_bytes(draw, data, at + 4, min(len(data), at + 2 + length)), f"jpeg {marker:02x} body"
    if marker in (0xC0, 0xC2):  # SOF: precision, height, width, components, sampling
        if action == 1:
            new_marker = draw.choice((0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCA, 0xCB, 0xC0))
            return data[: at + 1] + bytes([new_marker]) + data[at + 2 :], f"jpeg SOF -> {new_marker:02x}"
        field = draw.choice(((4, "B"), (5, ">H"), (7, ">H"), (9, "B"), (11, "B"), (12, "B"), (14, "B")))
        return _pack_field(data, at + field[0], field[1], draw), f"jpeg SOF +{field[0]}"
    body = data[at + 4 : at + 2 + length]  # APP1: "Exif\0\0" + TIFF
    if body.startswith(b"Exif\x00\x00"):
        tiff, what = _mutate_tiff(draw, body[6:])
        segment = b"\xff\xe1" + struct.pack(">H", (len(tiff) + 8) % 65536) + body[:6] + tiff
        return data[:at] + segment + data[at + 2 + length :], what
    return mutate_bytes(draw, data, at + 4, at + 2 + length), "jpeg APP1 bytes"


_TIFF_TAGS = (
    256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 284, 317, 320, 338, 339, 700, 34665, 34675, 34853,
)  # fmt: skip


def _tiff_entries(data: bytes) -> tuple[str, list[int]]:
    """The byte order ('<' or '>') and the offsets of IFD0's 12-byte entries of a classic TIFF."""
    if data[:2] not in (b"II", b"MM") or len(data) < 8:
        return "<", []
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd + 2 > len(data):
        return order, []
    (count,) = struct.unpack_from(order + "H", data, ifd)
    return order, [ifd + 2 + 12 * index for index in range(count) if ifd + 14 + 12 * index <= len(data)]


def _mutate_tiff(draw: Draw, data: bytes) -> tuple[bytes, str]:
    order, entries = _tiff_entries(data)
    if not entries:
        return mutate_bytes(draw, data) if data else draw.blob(8, 64), "tiff bytes"
    at = draw.choice(entries)
    action = draw.integer(0, 5)
    if action == 0:  # the tag
        tag = draw.choice(_TIFF_TAGS)
        return data[:at] + struct.pack(order + "H", tag) + data[at + 2 :], f"tiff tag {tag}"
    if action == 1:  # the type: 1 byte .. 12 double, 2 ASCII (StripOffsets as text), 13 IFD, 0 and 99 unknown
        kind = draw.choice((0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 16, 99))
        return data[: at + 2] + struct.pack(order + "H", kind) + data[at + 4 :], f"tiff type {kind}"
    if action == 2:
        return _pack_field(data, at + 4, order + "I", draw), "tiff count"
    if action == 3:
        return _pack_field(data, at + 8, order + "I", draw), "tiff value"
    if action == 4:  # the entry count or the next IFD's offset (which may loop)
        ifd = entries[0] - 2
        if draw.integer(0, 1):
            return _pack_field(data, ifd, order + "H", draw), "tiff entry count"
        next_at = entries[-1] + 12
        return _pack_field(data, next_at, order + "I", draw), "tiff next IFD"
    return _pack_field(data, 4, order + "I", draw), "tiff first IFD"


def _tiff_blob(draw: Draw) -> bytes:
    """A small little-endian TIFF structure (an EXIF block) with an orientation and a few tags."""
    make = int.from_bytes(b"Fuz\0", "little")
    entries = [(274, 3, 1, 6), (256, 4, 1, 40), (271, 2, 4, make), (34665, 4, 1, 8)]
    body = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    body += b"".join(struct.pack("<HHII", *entry) for entry in entries) + struct.pack("<I", 0)
    return _mutate_tiff(draw, body)[0] if draw.integer(0, 1) else body


def _mutate_webp(draw: Draw, data: bytes) -> tuple[bytes, str]:
    # RIFF size at 4; the first chunk's size at 16; VP8L dimensions from 21, VP8 from 26, VP8X canvas from 24.
    field = draw.choice(((4, "<I"), (16, "<I"), (21, "<I"), (26, "<H"), (28, "<H"), (24, "<I"), (27, "<I")))
    return _pack_field(data, field[0], field[1], draw), f"webp +{field[0]}"


def _mutate_bmp(draw: Draw, data: bytes) -> tuple[bytes, str]:
    # bfSize, bfOffBits, biSize, width, height, planes, bit count, compression, image size, colours used.
    field = draw.choice(((2, "<I"), (10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (26, "<H"), (28, "<H"),
                         (30, "<I"), (34, "<I"), (46, "<I")))  # fmt: skip
    return _pack_field(data, field[0], field[1], draw), f"bmp +{field[0]}"


def mutate_image(draw: Draw, seed: bytes) -> tuple[bytes, list[str]]:
    """One or two mutations that follow the photo's format, then sometimes a generic one."""
    if seed.startswith(b"\x89PNG"):
        mutate = _mutate_png
    elif seed.startswith(b"\xff\xd8"):
        mutate = _mutate_jpeg
    elif seed[:4] in (b"II*\x00", b"MM\x00*"):
        mutate = _mutate_tiff
    elif seed.startswith(b"RIFF"):
        mutate = _mutate_webp
    elif seed.startswith(b"BM"):
        mutate = _mutate_bmp
    else:
        mutate = None
    data, done = seed, []
    for _ in range(draw.integer(1, 2)):
        if mutate is not None:
            data, what = mutate(draw, data)
            done.append(what)
    if mutate is None or draw.integer(0, 3) == 0:
        data = mutate_bytes(draw, data)
        done.append("bytes")
    return data[:MAX_CASE_BYTES], done


def check_image(path: Path, max_side: int = 512) -> Outcome:
    """'loaded' (a photo no larger than max_side, finite, in [0, 1]) or 'refused' (skipped with
    its reason, which ingest reports as an IngestError naming the file)."""
    from lca_blender.reconstruct.ingest import ingest

    try:
        result = ingest([path], max_side=max_side)
    except AvatarError as error:
        assert path.name in str(error) or not path.is_file(), "the error does not name the photo"
        return Outcome("refused", str(error))
    (photo,) = result.photos
    height, width, channels = photo.pixels.shape
    assert channels == 3 and max(height, width) <= max_side and photo.pixels.dtype == np.float32
    assert np.isfinite(photo.pixels).all() and photo.pixels.min() >= 0 and photo.pixels.max() <= 1
    assert photo.alpha is None or photo.alpha.shape == (height, width)
    return Outcome("loaded")


@dataclass(frozen=True)
class Reader:
    """A reader under fuzzing: its seed files, its mutation and its check."""

    name: str
    suffix: str
    seeds: Callable[[Path], list[Path]]
    mutate: Callable[[Draw, bytes], tuple[bytes, list[str]]]
    check: Callable[[Path], Outcome]


READERS = {
    "lca": Reader("lca", ".lca", lca_seeds, mutate_lca, check_lca),
    "ply": Reader("ply", ".ply", ply_seeds, mutate_ply, check_ply),
    "image": Reader("image", ".img", image_seeds, mutate_image, check_image),
}
