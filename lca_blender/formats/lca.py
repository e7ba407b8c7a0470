"""The .lca avatar file: a zip of a JSON manifest and .npy arrays, read without trusting it.

Layout (schema version 3; versions 1 and 2, written before the outer layer and before antialiased
splats, read the same way, as classic splats):
    manifest.json           {"format": "lca", "schema_version": 3, "kind": "avatar" | "rig",
                             "rig": {joint_names, expression_names, body_model, body_parameters},
                             "provenance": {...}, "antialiased": true | false (avatars),
                             "arrays": {name: {"shape": [...], "dtype": "<f4"}}}
    arrays/rig/<name>.npy   the Rig's arrays (see `avatar.Rig`)
    arrays/gaussians/<name>.npy   the Gaussians' arrays (kind "avatar" only)

Reading trusts nothing in the file, and every problem is an AvatarFileError: the file is a regular
file and a zip of bounded size; the manifest is JSON that could be written back (no NaN, no lone
surrogates, bounded nesting); each entry is stored or deflated (what the writer uses) and is read
once, in bounded chunks, so memory follows the bytes that really come out, never a size field, and
the bytes inflated from the whole file are capped; the .npy header (parsed here, with a length cap,
through `ast.literal_eval`) has the dtype and shape the manifest promises and the schema allows;
the byte count matches. Only then is the array a view of the bytes read, and the dataclasses
validate shapes across arrays, finiteness, index ranges and what posing needs (rigid rest frames,
unit quaternions, ...). No pickle is involved anywhere. Writing goes to a temporary file that is
renamed into place.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import __version__
from ..avatar import GaussianAvatar, Rig
from ..errors import AvatarError, AvatarFileError
from .atomic import atomic_output
from .reading import open_regular_file, read_at_most

FORMAT_NAME = "lca"
# 2: the rig's optional vertex_layers (skin / outer layer of clothes and hair); 3: "antialiased"
SCHEMA_VERSION = 3
MANIFEST_NAME = "manifest.json"

MAX_FILE_BYTES = 16 * 1024**3
MAX_INFLATED_BYTES = 16 * 1024**3  # all the entries read from one file, as they come out of the zip
MAX_MANIFEST_BYTES = 16 * 1024**2
MAX_MANIFEST_DEPTH = 32  # nesting of JSON objects and lists (provenance is about 5 deep)
MAX_ARRAY_BYTES = 8 * 1024**3
MAX_NPY_HEADER_BYTES = 64 * 1024
MAX_MEMBERS = 256
_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}  # what write_avatar uses
# An entry's local header: signature, 22 bytes of fields the central directory repeats, then the
# lengths of the name and of the extra field that come before the entry's bytes.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
# What zipfile and zlib raise on a damaged archive or entry (struct.error: a short extra field).
_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, struct.error, OSError, EOFError, ValueError, NotImplementedError,
    RuntimeError,
)  # fmt: skip

# name -> (dtype, shape with symbolic sizes); sizes: J joints, V vertices, F triangles,
# K skin influences, E expressions, U uv coordinates, N Gaussians, B SH coefficients.
RIG_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "joint_parents": ("<i4", ("J",)),
    "rest_transforms": ("<f4", ("J", 4, 4)),
    "bone_tails": ("<f4", ("J", 3)),
    "vertices": ("<f4", ("V", 3)),
    "triangles": ("<i4", ("F", 3)),
    "skin_indices": ("<i4", ("V", "K")),
    "skin_weights": ("<f4", ("V", "K")),
    "expression_deltas": ("<f4", ("E", "V", 3)),
    "uvs": ("<f4", ("U", 2)),
    "triangle_uvs": ("<i4", ("F", 3)),
    "vertex_layers": ("<i4", ("V",)),
}
OPTIONAL_RIG_ARRAYS = frozenset({"uvs", "triangle_uvs", "vertex_layers"})
GAUSSIAN_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "triangle_ids": ("<i4", ("N",)),
    "barycentrics": ("<f4", ("N", 3)),
    "normal_offsets": ("<f4", ("N",)),
    "rotations": ("<f4", ("N", 4)),
    "log_scales": ("<f4", ("N", 3)),
    "opacities": ("<f4", ("N",)),
    "albedo": ("<f4", ("N", 3)),
    "roughness": ("<f4", ("N",)),
    "specular": ("<f4", ("N",)),
    "sh": ("<f4", ("N", "B", 3)),
}
SIZE_CAPS = {
    "J": 4096, "V": 4_000_000, "F": 8_000_000, "K": 32, "E": 1024, "U": 8_000_000,
    "N": 50_000_000, "B": 16,
}  # fmt: skip


def write_avatar(path: str | os.PathLike, avatar: GaussianAvatar) -> None:
    """Write `avatar` to an .lca file atomically (an existing file is replaced only on success)."""
    avatar.validate()
    arrays = {f"rig/{name}": value for name, value in _rig_arrays(avatar.rig).items()}
    arrays.update({f"gaussians/{name}": getattr(avatar, name) for name in GAUSSIAN_ARRAYS})
    _write_container(path, "avatar", avatar.rig, avatar.provenance, arrays, avatar.antialiased)


def write_rig(path: str | os.PathLike, rig: Rig) -> None:
    """Write a rig alone (the body-model caches use this), atomically."""
    rig.validate()
    arrays = {f"rig/{name}": value for name, value in _rig_arrays(rig).items()}
    _write_container(path, "rig", rig, {}, arrays)


def read_avatar(path: str | os.PathLike) -> GaussianAvatar:
    """Read and fully check an .lca avatar file; raises AvatarFileError on any problem."""
    with _open_container(path) as container:
        if container.manifest.get("kind") != "avatar":
            raise container.error("it holds a body rig only, not an avatar")
        rig = container.read_rig()
        arrays = {
            name: container.read_array(f"gaussians/{name}", spec) for name, spec in GAUSSIAN_ARRAYS.items()
        }
        provenance = container.manifest.get("provenance", {})
        if not isinstance(provenance, dict):
            raise container.error("its provenance is not a JSON object")
        antialiased = container.manifest.get("antialiased", False)  # absent before schema 3
        if not isinstance(antialiased, bool):
            raise container.error("its 'antialiased' is not true or false")
        return container.build(
            GaussianAvatar, rig=rig, provenance=provenance, antialiased=antialiased, **arrays
        )


def read_rig(path: str | os.PathLike) -> Rig:
    """Read the rig of an .lca file (an avatar or a rig-only file)."""
    with _open_container(path) as container:
        return container.read_rig()


def _rig_arrays(rig: Rig) -> dict[str, np.ndarray]:
    arrays = {name: getattr(rig, name) for name in RIG_ARRAYS if name not in OPTIONAL_RIG_ARRAYS}
    if rig.uvs is not None:
        arrays.update(uvs=rig.uvs, triangle_uvs=rig.triangle_uvs)
    if rig.vertex_layers is not None:
        arrays["vertex_layers"] = rig.vertex_layers
    return arrays


def _write_container(
    path: str | os.PathLike,
    kind: str,
    rig: Rig,
    provenance: dict[str, Any],
    arrays: dict[str, np.ndarray],
    antialiased: bool = False,
) -> None:
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "engine_version": __version__,
        "rig": {
            "joint_names": list(rig.joint_names),
            "expression_names": list(rig.expression_names),
            "body_model": rig.body_model,
            "body_parameters": rig.body_parameters,
        },
        "provenance": provenance,
        **({"antialiased": antialiased} if kind == "avatar" else {}),
        "arrays": {
            name: {"shape": list(array.shape), "dtype": array.dtype.newbyteorder("<").str}
            for name, array in arrays.items()
        },
    }
    try:
        manifest_bytes = json.dumps(manifest, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise AvatarError(f"The avatar's metadata cannot be saved as JSON: {error}.") from None
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        archive = zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
        try:
            archive.writestr(MANIFEST_NAME, manifest_bytes)
            for name, array in arrays.items():
                buffer = io.BytesIO()
                little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
                np.lib.format.write_array(buffer, little_endian, allow_pickle=False)
                # The rig's arrays (blendshapes are mostly zeros) shrink a lot when deflated;
                # the Gaussians' floats hardly do, and storing them keeps imports fast.
                stored = name.startswith("gaussians/")
                compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                archive.writestr(f"arrays/{name}.npy", buffer.getvalue(), compress_type=compression)
        except BaseException:
            # Stopped midway (Ctrl-C, the add-on's Cancel, a full disk): the file is thrown away
            # unfinished. Stopped while zipfile was opening an entry, its close() would refuse
            # with an error of its own in place of the stop (the file itself closes above).
            with contextlib.suppress(ValueError):
                archive.close()
            archive.fp = None  # nothing more to write: its finaliser would try close() again
            raise
        archive.close()


class _Container:
    """An opened .lca zip whose manifest has been checked."""

    def __init__(self, path: Path, handle: BinaryIO, archive: zipfile.ZipFile) -> None:
        self.path = path
        self.handle = handle  # the file the archive reads
        self.file_bytes = os.fstat(handle.fileno()).st_size
        self.archive = archive
        self.sizes: dict[str, int] = {}
        self.inflated = 0  # bytes read out of the zip so far
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise self.error(f"it has {len(members)} entries (at most {MAX_MEMBERS} expected)")
        self.members = {member.filename: member for member in members}
        # A quick refusal on the size fields alone; reading never relies on them.
        if sum(member.file_size for member in members) > MAX_INFLATED_BYTES:
            raise self.error("its contents are larger than any avatar could be")
        self.manifest = self._read_manifest()

    def error(self, problem: str) -> AvatarFileError:
        return AvatarFileError(
            f"Cannot open the avatar file '{self.path.name}': {problem}. "
            "Re-export it from LCA Avatars, or rebuild the avatar from its photos."
        )

    def _read_member(self, name: str, limit: int) -> bytearray | memoryview:
        """The entry's bytes, read once into one writable buffer (arrays are views of it).

        A deflated entry's buffer grows with what the zip really yields, in bounded chunks; a stored
        entry's is made once its bytes are known to be in the file. So a size field that lies
        allocates nothing, and an entry, or all of them together, that inflates beyond its cap is
        refused as soon as the cap is passed.
        """
        member = self.members.get(name)
        if member is None:
            raise self.error(f"the entry '{name}' is missing")
        if member.compress_type not in _COMPRESSIONS:
            raise self.error(f"the entry '{name}' is compressed in a way LCA files never are")
        if member.flag_bits & 0x1:
            raise self.error(f"the entry '{name}' is encrypted")
        if member.file_size > limit:
            raise self.error(f"the entry '{name}' is too large ({member.file_size} bytes)")
        allowed = min(limit, MAX_INFLATED_BYTES - self.inflated)
        try:
            if member.compress_type == zipfile.ZIP_STORED:
                data = self._read_stored(member, allowed)
            else:
                with self.archive.open(member) as stream:
                    data = read_at_most(stream, allowed)
        except _ZIP_ERRORS as error:
            raise self.error(f"the entry '{name}' is damaged ({error})") from None
        except MemoryError:
            raise AvatarFileError(
                f"There is not enough memory to open the avatar file '{self.path.name}'. "
                "Close other programs and try again."
            ) from None
        if len(data) > allowed:
            raise self.error(f"the entry '{name}' inflates to more than any avatar could need")
        self.inflated += len(data)
        return data

    def _read_stored(self, member: zipfile.ZipInfo, allowed: int) -> memoryview:
        """A stored entry's bytes, read from the file straight into one buffer and checked against
        the entry's CRC, as zipfile checks them (reading through zipfile copies every byte once
        more, and the Gaussians' arrays are stored). The buffer has the entry's recorded size, made
        only once that many bytes are known to lie in the file after the entry's header and within
        `allowed`. Zip problems raise what zipfile raises (see _ZIP_ERRORS)."""
        name = member.filename
        size = member.file_size
        if member.compress_size != size:
            raise zipfile.BadZipFile(f"'{name}' is stored with two different sizes")
        self.handle.seek(member.header_offset)
        header = self.handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise zipfile.BadZipFile("the file ends inside an entry's header")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        # Entries read here have ASCII names (ours); another name would be a different entry.
        if signature != _LOCAL_HEADER_SIGNATURE or self.handle.read(name_length) != name.encode("ascii"):
            raise zipfile.BadZipFile("the entry's header does not match the archive's directory")
        start = member.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if start + size > self.file_bytes:
            raise zipfile.BadZipFile("the entry runs past the end of the file")
        if size > allowed:
            raise self.error(f"the entry '{name}' inflates to more than any avatar could need")
        data = np.empty(size, np.uint8).data  # unlike bytearray(size), not zeroed first
        self.handle.seek(start)
        filled = 0
        while filled < size:
            count = self.handle.readinto(data[filled:])
            if not count:
                raise EOFError("the file ended inside an entry")
            filled += count
        if zlib.crc32(data) != member.CRC:
            raise zipfile.BadZipFile("the entry's bytes do not match its CRC")
        return data

    def _read_manifest(self) -> dict[str, Any]:
        raw = self._read_member(MANIFEST_NAME, MAX_MANIFEST_BYTES)
        try:
            manifest = json.loads(str(raw, "utf-8"), parse_constant=_refuse_constant)
            # What write_avatar could not write back (a lone surrogate, an infinite number) would
            # fail later, when a name is printed or saved.
            json.dumps(manifest, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
            raise self.error("its manifest is not valid JSON") from None
        if _nesting_depth(manifest) > MAX_MANIFEST_DEPTH:
            raise self.error("its manifest is nested too deeply")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise self.error("it is not an LCA avatar file")
        version = manifest.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.error("its schema version is missing or invalid")
        if version > SCHEMA_VERSION:
            raise AvatarFileError(
                f"The avatar file '{self.path.name}' was written by a newer LCA Avatars "
                f"(schema {_shown(version)}; this version reads up to {SCHEMA_VERSION}). "
                "Update the add-on and the engine."
            )
        for key, kind in (("arrays", dict), ("rig", dict)):
            if not isinstance(manifest.get(key), kind):
                raise self.error(f"its manifest has no valid '{key}' section")
        return manifest

    def _bind_size(self, symbol: str, value: int) -> None:
        if value > SIZE_CAPS[symbol]:
            raise self.error(f"it declares {_shown(value)} items where at most {SIZE_CAPS[symbol]} fit")
        if self.sizes.setdefault(symbol, value) != value:
            raise self.error("its arrays disagree on how many items they hold")

    def read_array(self, name: str, spec: tuple[str, tuple[str | int, ...]]) -> np.ndarray:
        dtype, symbolic_shape = spec
        declared = self.manifest["arrays"].get(name)
        if not isinstance(declared, dict) or declared.get("dtype") != dtype:
            raise self.error(f"the array '{name}' is missing or has the wrong type")
        shape = declared.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != len(symbolic_shape)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise self.error(f"the array '{name}' has an invalid shape")
        for size, symbol in zip(shape, symbolic_shape, strict=True):
            if isinstance(symbol, int):
                if size != symbol:
                    raise self.error(f"the array '{name}' has the wrong shape {_shown(shape)}")
            else:
                self._bind_size(symbol, size)
        data_bytes = math.prod(shape) * np.dtype(dtype).itemsize
        if data_bytes > MAX_ARRAY_BYTES:
            raise self.error(f"the array '{name}' is larger than any avatar could need")
        raw = self._read_member(f"arrays/{name}.npy", data_bytes + MAX_NPY_HEADER_BYTES + 16)
        header, offset = self._parse_npy_header(name, raw)
        if header != (dtype, False, tuple(shape)):
            raise self.error(f"the array '{name}' does not match its description")
        if len(raw) - offset != data_bytes:
            raise self.error(f"the array '{name}' is truncated or has extra bytes")
        array = np.frombuffer(raw, dtype=np.dtype(dtype), offset=offset).reshape(shape)
        # Native byte order, as the dataclasses expect (a no-op view on little-endian machines);
        # the array is writable and owns its buffer, which nothing else holds.
        return array.astype(array.dtype.newbyteorder("="), copy=False)

    def _parse_npy_header(self, name: str, raw: bytearray | memoryview) -> tuple[tuple, int]:
        if len(raw) < 10 or raw[:6] != b"\x93NUMPY":
            raise self.error(f"the array '{name}' is not a .npy array")
        major = raw[6]
        if major == 1:
            length, start = int.from_bytes(raw[8:10], "little"), 10
        elif major in (2, 3):
            length, start = int.from_bytes(raw[8:12], "little"), 12
        else:
            raise self.error(f"the array '{name}' has an unknown .npy version")
        if length > MAX_NPY_HEADER_BYTES or start + length > len(raw):
            raise self.error(f"the array '{name}' has a damaged header")
        try:
            header = ast.literal_eval(str(raw[start : start + length], "latin1"))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {{}: 0}
            raise self.error(f"the array '{name}' has a damaged header") from None
        if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
            raise self.error(f"the array '{name}' has a damaged header")
        shape = header["shape"]
        if not isinstance(shape, tuple):
            raise self.error(f"the array '{name}' has a damaged header")
        return (header["descr"], header["fortran_order"], shape), start + length

    def read_rig(self) -> Rig:
        section = self.manifest["rig"]
        joint_names = section.get("joint_names")
        expression_names = section.get("expression_names")
        body_parameters = section.get("body_parameters", {})
        body_model = section.get("body_model", "unknown")
        for value, what in ((joint_names, "joint"), (expression_names, "expression")):
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise self.error(f"its {what} names are missing or invalid")
        if not isinstance(body_parameters, dict):
            raise self.error("its body parameters are not a JSON object")
        if not isinstance(body_model, str):
            raise self.error("its body model's name is not text")
        self._bind_size("J", len(joint_names))
        self._bind_size("E", len(expression_names))
        arrays = {}
        for name, spec in RIG_ARRAYS.items():
            if name in OPTIONAL_RIG_ARRAYS and f"rig/{name}" not in self.manifest["arrays"]:
                arrays[name] = None
                continue
            arrays[name] = self.read_array(f"rig/{name}", spec)
        return self.build(
            Rig,
            joint_names=joint_names,
            expression_names=expression_names,
            body_model=body_model,
            body_parameters=body_parameters,
            **arrays,
        )

    def build(self, cls: type, **fields: Any) -> Any:
        try:
            return cls(**fields)
        except AvatarError as error:
            raise self.error(str(error).rstrip(".")) from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _nesting_depth(value: Any) -> int:
    """How deeply JSON objects and lists nest in `value` (0 for a number or a string)."""
    depth, level = 0, [value]
    while containers := [item for item in level if isinstance(item, (dict, list))]:
        depth += 1
        level = [
            child for item in containers for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def _shown(value: Any) -> str:
    """`value` for a message, cut short: a size field may hold a 4,000-digit number."""
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@contextlib.contextmanager
def _open_container(path: str | os.PathLike) -> Iterator[_Container]:
    path = Path(path)
    try:
        handle = open_regular_file(path)
    except FileNotFoundError:
        raise AvatarFileError(f"The avatar file '{path}' does not exist.") from None
    except IsADirectoryError:
        raise AvatarFileError(f"'{path}' is a folder; give the path of an .lca avatar file.") from None
    except OSError as error:
        raise AvatarFileError(
            f"Cannot open the avatar file '{path}': {error.strerror or error}. "
            "Give the path of a saved .lca file you can read."
        ) from None
    with handle:
        if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
            raise AvatarFileError(f"The file '{path.name}' is too large to be an LCA avatar.")
        try:
            archive = zipfile.ZipFile(handle)
        except _ZIP_ERRORS:
            raise AvatarFileError(
                f"The file '{path.name}' is not an LCA avatar (.lca) file, or it is damaged. "
                "Give an .lca file saved by LCA Avatars, or re-export it."
            ) from None
        with archive:
            yield _Container(path, handle, archive)
