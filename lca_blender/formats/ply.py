"""Read and write static 3D Gaussian splats as the de-facto 3DGS binary .ply (INRIA layout)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..avatar import Splats
from ..errors import AvatarFileError, AvatarWriteError
from .atomic import atomic_output
from .reading import open_regular_file

logger = logging.getLogger(__name__)

HEADER_LIMIT_BYTES = 64 * 1024
"""A header longer than this is refused: real 3DGS headers are about 2 KiB."""

MAX_SPLAT_COUNT = 50_000_000
"""Largest vertex count accepted (about 12 GB of degree-3 data), checked before allocating."""

OPACITY_CLIP = 1e-6
"""Opacities are clipped to [OPACITY_CLIP, 1 - OPACITY_CLIP] before the logit, which is infinite at
0 and 1; the clipped values read back as 1e-6 and 0.999999, invisible differences on screen."""

_SH_REST_COUNTS = {0: 1, 9: 4, 24: 9, 45: 16}  # f_rest_* count -> SH coefficients per channel

_REQUIRED = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip

# PLY scalar types, under both their classic and their sized names.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip

_ENDIAN = {"binary_little_endian": "<", "binary_big_endian": ">"}
_END_HEADER = re.compile(rb"(?:^|\n)end_header\r?\n")
_F_REST = re.compile(r"f_rest_\d{1,6}")
_COUNT_DIGITS = 18  # longer counts are far above any cap and are refused without int()
_QUATERNION_UNIT_TOLERANCE = 1e-6  # float32 unit quaternions are within a few ulp (~2.4e-7) of 1

_RE_EXPORT = "Re-export it from the tool that made it as a binary 3D Gaussian splat .ply."


def write_ply(path: str | os.PathLike, splats: Splats) -> None:
    """Write `splats` as a binary little-endian 3DGS .ply that SuperSplat, gsplat, INRIA's 3DGS and
    KIRI read.

    Properties, all float32, in this order: x y z nx ny nz f_dc_0..2 f_rest_0..f_rest_{3(B-1)-1}
    opacity scale_0..2 rot_0..3. Scales are stored as natural logs, opacities as logits (after
    clipping to [OPACITY_CLIP, 1 - OPACITY_CLIP]), rot_0..3 = w, x, y, z, normals are zero, and
    f_rest is channel-major (all red coefficients, then green, then blue), as INRIA writes it.
    Antialiased splats carry the header comment "SplatRenderMode: mip" (Brush's and SplatTransform's;
    PlayCanvas renders such files with the opacity compensation).
    The file appears whole or not at all; an existing file is replaced only on success.
    """
    count, coefficients = splats.count, splats.sh.shape[1]
    if count == 0:
        raise AvatarWriteError(f"Nothing to write to '{path}': there are no splats.")
    names = _property_names(coefficients)
    # Every property is float32, so a contiguous [N, P] little-endian matrix is exactly the packed
    # PLY record layout: one vectorised fill per property group, no per-row Python.
    table = np.empty((count, len(names)), dtype="<f4")
    table[:, 0:3] = splats.means
    table[:, 3:6] = 0.0
    table[:, 6:9] = splats.sh[:, 0, :]
    rest_end = 9 + 3 * (coefficients - 1)
    # [N, B-1, 3] -> [N, 3, B-1] -> rows: f_rest index = channel * (B - 1) + (coefficient - 1).
    table[:, 9:rest_end] = splats.sh[:, 1:, :].transpose(0, 2, 1).reshape(count, -1)
    opacities = np.clip(splats.opacities.astype(np.float64), OPACITY_CLIP, 1.0 - OPACITY_CLIP)
    table[:, rest_end] = np.log(opacities / (1.0 - opacities))
    table[:, rest_end + 1 : rest_end + 4] = np.log(splats.scales.astype(np.float64))
    table[:, rest_end + 4 : rest_end + 8] = splats.rotations
    header = _header(count, names, splats.antialiased)
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(header)
        handle.write(table.data)


def read_ply(path: str | os.PathLike) -> Splats:
    """Read a static 3DGS .ply (binary, either endianness) into world-space `Splats`.

    Strict by design, so a file that is not what it claims fails with a message instead of
    becoming garbage splats:
    - the header must end (`end_header`) within HEADER_LIMIT_BYTES; `ascii` files are refused;
    - the one element with data is `vertex`; other elements are allowed only with count 0 (some
      writers declare an empty `face` element);
    - x y z, f_dc_0..2, opacity, scale_0..2 and rot_0..3 are required and must be float or double;
      f_rest_0..f_rest_{K-1} are optional with K in 0, 9, 24, 45 (SH degree 0..3); any other scalar
      property (normals, colours, ...) is skipped; `list` properties in `vertex` are refused;
    - at most MAX_SPLAT_COUNT vertices, and the file size must equal the header plus exactly the
      declared rows, checked before allocating: missing bytes mean a truncated file, extra bytes
      mean a header that does not describe the data, and both are errors.
    Rows with a NaN or infinite value in a property used here, a zero quaternion, or a log-scale
    whose exp is not a positive float32 are dropped with a logged warning (one bad splat should
    not lose a whole capture); if none remain, the file is refused. Quaternions are normalised
    (rows already unit to float32 precision are kept bit for bit; doubles too large or too small
    to square are scaled first), scales = exp(log-scale), opacities = sigmoid(logit).
    A header comment "SplatRenderMode: mip" or "postshot.anti_aliasing=1" marks them antialiased.
    Only a regular file is opened (a named pipe would block, a device never end).
    """
    source = Path(path)
    try:
        with open_regular_file(source) as handle:
            layout = _parse_header(source, handle.read(HEADER_LIMIT_BYTES))
            _check_data_size(source, layout, os.fstat(handle.fileno()).st_size)
            handle.seek(layout.data_offset)
            rows = np.fromfile(handle, dtype=layout.row, count=layout.count)
        if rows.shape[0] != layout.count:  # the file shrank while being read
            raise _file_error(source, "it changed while being read", "Try again once it is saved.")
        splats = _splats_from_rows(source, rows, layout.sh_rest_names)
        splats.antialiased = layout.antialiased
        return splats
    except OSError as error:
        raise _file_error(source, error.strerror or str(error), "Check the path and permissions.") from None
    except MemoryError:
        raise _file_error(
            source,
            "there is not enough memory to load its splats",
            "Close other programs, or split the capture into smaller files.",
        ) from None


@dataclass(frozen=True)
class _Layout:
    """What the header says about the vertex data."""

    data_offset: int  # bytes before the first row
    count: int
    row: np.dtype  # structured, explicit byte order, one field per property
    sh_rest_names: tuple[str, ...]  # f_rest_0 .. f_rest_{K-1}
    antialiased: bool = False  # a header comment says the splats were trained antialiased


def _property_names(coefficients: int) -> list[str]:
    rest = [f"f_rest_{index}" for index in range(3 * (coefficients - 1))]
    return [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest,
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ]  # fmt: skip


# Header comments by which trainers mark antialiased splats (compared without case or spaces):
# Brush and PlayCanvas's SplatTransform, and Postshot.
ANTIALIASED_COMMENTS = ("splatrendermode:mip", "postshot.anti_aliasing=1")


def _header(count: int, names: list[str], antialiased: bool = False) -> bytes:
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment Generated by LCA Avatars {__version__}",
        *(["comment SplatRenderMode: mip"] if antialiased else []),
        f"element vertex {count}",
        *(f"property float {name}" for name in names),
        "end_header",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _file_error(path: Path, problem: str, advice: str) -> AvatarFileError:
    return AvatarFileError(f"Cannot read '{path}' as 3D Gaussian splats: {problem}. {advice}")


@dataclass(frozen=True)
class _Element:
    """One 'element' of the header, with its properties as they are declared."""

    name: str
    count: int
    properties: list[tuple[str, str]] = field(default_factory=list)  # (name, numpy type code)


def _parse_header(path: Path, head: bytes) -> _Layout:
    """Parse the PLY header at the start of `head` (the file's first HEADER_LIMIT_BYTES)."""
    data_offset, text = _header_text(path, head)
    endian, elements, antialiased = _header_elements(path, text)
    return dataclasses.replace(_vertex_layout(path, endian, elements, data_offset), antialiased=antialiased)


def _header_text(path: Path, head: bytes) -> tuple[int, str]:
    """The header's length in bytes (up to and with the 'end_header' line) and its text."""
    if not head:
        raise _file_error(path, "the file is empty", _RE_EXPORT)
    if not (head.startswith(b"ply\n") or head.startswith(b"ply\r\n")):
        raise _file_error(path, "it is not a PLY file (it does not start with 'ply')", _RE_EXPORT)
    end = _END_HEADER.search(head)
    if end is None:
        where = (
            f"within its first {HEADER_LIMIT_BYTES // 1024} KiB"
            if len(head) == HEADER_LIMIT_BYTES
            else "(the file ends inside the header)"
        )
        raise _file_error(path, f"no 'end_header' line {where}", _RE_EXPORT)
    try:
        return end.end(), head[: end.end()].decode("utf-8")
    except UnicodeDecodeError:
        raise _file_error(path, "its header contains bytes that are not text", _RE_EXPORT) from None


def _header_elements(path: Path, text: str) -> tuple[str, list[_Element], bool]:
    """The byte order ('<' or '>'), the elements the header text declares, in order, and whether
    a comment marks the splats antialiased (ANTIALIASED_COMMENTS)."""
    endian: str | None = None
    elements: list[_Element] = []
    antialiased = False
    # Split on "\n" only (str.splitlines also splits on form feeds and other characters a comment
    # may hold); a trailing "\r" is whitespace to str.split.
    for number, line in enumerate(text.rstrip("\n").split("\n")[1:-1], start=2):
        tokens = line.split()
        if tokens and tokens[0] == "comment":
            antialiased |= "".join(tokens[1:]).lower() in ANTIALIASED_COMMENTS
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        keyword = tokens[0]
        if keyword == "format":
            endian = _parse_format(path, tokens, endian is not None, bool(elements))
        elif keyword == "element":
            if endian is None:
                raise _file_error(path, "its 'format' line is missing", _RE_EXPORT)
            if len(tokens) != 3:
                raise _file_error(path, f"header line {number} is not 'element NAME COUNT'", _RE_EXPORT)
            name = tokens[1]
            if any(name == existing.name for existing in elements):
                raise _file_error(path, f"the element '{name}' is declared twice", _RE_EXPORT)
            elements.append(_Element(name, _parse_count(path, name, tokens[2])))
        elif keyword == "property":
            if not elements:
                raise _file_error(path, f"header line {number} has a property before any element", _RE_EXPORT)
            _parse_property(path, number, tokens, elements[-1])
        else:
            raise _file_error(
                path, f"header line {number} starts with the unknown word '{keyword}'", _RE_EXPORT
            )
    if endian is None:
        raise _file_error(path, "its 'format' line is missing", _RE_EXPORT)
    return endian, elements, antialiased


def _parse_property(path: Path, number: int, tokens: list[str], element: _Element) -> None:
    """Add the property on header line `number` to `element` (list properties take no bytes and
    are checked and left out)."""
    if len(tokens) >= 2 and tokens[1] == "list":
        # A list property has a per-row size, which static splats never need; in an element
        # with no rows (e.g. an empty 'face') it takes no bytes and is harmless.
        if element.name == "vertex":
            raise _file_error(
                path, "its vertex element has a 'list' property, which splats do not use", _RE_EXPORT
            )
        if len(tokens) != 5:
            raise _file_error(path, f"header line {number} is a malformed list property", _RE_EXPORT)
        return
    if len(tokens) != 3:
        raise _file_error(path, f"header line {number} is not 'property TYPE NAME'", _RE_EXPORT)
    type_name, property_name = tokens[1], tokens[2]
    if type_name not in _PLY_TYPES:
        raise _file_error(
            path, f"the property '{property_name}' has the unknown type '{type_name}'", _RE_EXPORT
        )
    if any(property_name == existing for existing, _ in element.properties):
        raise _file_error(
            path, f"the property '{property_name}' is declared twice in '{element.name}'", _RE_EXPORT
        )
    element.properties.append((property_name, _PLY_TYPES[type_name]))


def _vertex_layout(path: Path, endian: str, elements: list[_Element], data_offset: int) -> _Layout:
    """The vertex data's layout, once the elements are those of a splat file."""
    element_names = [element.name for element in elements]
    if "chunk" in element_names:
        raise _file_error(
            path,
            "it is a compressed splat .ply (SuperSplat's 'chunk' layout), which this reader does not decode",
            "Export it from SuperSplat again as an uncompressed .ply.",
        )
    if "vertex" not in element_names:
        raise _file_error(path, "it has no 'vertex' element, so it holds no splats", _RE_EXPORT)
    for element in elements:
        if element.name != "vertex" and element.count != 0:
            raise _file_error(
                path,
                f"it has a non-empty '{element.name}' element ({element.count:,} rows); a splat .ply "
                "holds only vertices",
                "If it is a mesh, import it with File > Import > Stanford PLY instead.",
            )
    vertex = elements[element_names.index("vertex")]
    return _Layout(
        data_offset=data_offset,
        count=vertex.count,
        row=np.dtype([(name, endian + code) for name, code in vertex.properties]),
        sh_rest_names=_check_vertex_properties(path, dict(vertex.properties), vertex.count),
    )


def _check_data_size(path: Path, layout: _Layout, file_size: int) -> None:
    """Refuse a file whose size is not the header plus exactly the declared rows."""
    expected = layout.data_offset + layout.count * layout.row.itemsize
    if file_size < expected:
        rows_present = (file_size - layout.data_offset) / layout.row.itemsize
        raise _file_error(
            path,
            f"it is truncated: the header declares {layout.count:,} splats ({expected:,} bytes) "
            f"but the file has {file_size:,} bytes (about {rows_present:,.1f} splats)",
            "The download or save was probably interrupted; copy or export it again.",
        )
    if file_size > expected:
        raise _file_error(
            path,
            f"{file_size - expected:,} bytes follow the {layout.count:,} splats its header declares, "
            f"so the header does not describe the data",
            _RE_EXPORT,
        )


def _parse_format(path: Path, tokens: list[str], seen: bool, after_elements: bool) -> str:
    if seen or after_elements:
        raise _file_error(path, "its 'format' line is repeated or comes after an element", _RE_EXPORT)
    if len(tokens) >= 2 and tokens[1] == "ascii":
        raise _file_error(
            path,
            "it is an ASCII (text) PLY, which this reader does not read (too slow and large for splats)",
            "Re-save it as binary (little- or big-endian) .ply, e.g. from SuperSplat or CloudCompare.",
        )
    if len(tokens) != 3 or tokens[1] not in _ENDIAN or tokens[2] != "1.0":
        raise _file_error(
            path,
            f"its format '{' '.join(tokens[1:])}' is not binary_little_endian 1.0 or binary_big_endian 1.0",
            _RE_EXPORT,
        )
    return _ENDIAN[tokens[1]]


def _parse_count(path: Path, element: str, token: str) -> int:
    if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
        raise _file_error(path, f"the '{element}' element declares a negative count ({token})", _RE_EXPORT)
    if not (token.isascii() and token.isdigit()):
        raise _file_error(
            path, f"the '{element}' element's count '{token}' is not a whole number", _RE_EXPORT
        )
    # Compare digit counts first: int() of a 64 KiB string of digits is slow, and Python refuses it.
    count = int(token) if len(token) <= _COUNT_DIGITS else MAX_SPLAT_COUNT + 1
    if element == "vertex" and count > MAX_SPLAT_COUNT:
        declared = f"{count:,}" if len(token) <= _COUNT_DIGITS else f"a {len(token)}-digit number of"
        raise _file_error(
            path,
            f"it declares {declared} splats, more than the {MAX_SPLAT_COUNT:,} this reader accepts",
            "Split the capture into smaller files.",
        )
    return count


def _check_vertex_properties(path: Path, types: dict[str, str], count: int) -> tuple[str, ...]:
    """Check the vertex properties; return the f_rest_* names in coefficient order."""
    if count == 0:
        raise _file_error(path, "it declares 0 splats", _RE_EXPORT)
    missing = [name for name in _REQUIRED if name not in types]
    if missing:
        raise _file_error(
            path,
            f"its vertices lack {', '.join(missing)}; it looks like a point cloud or mesh, "
            f"not 3D Gaussian splats",
            "Export splats from your 3DGS tool (SuperSplat, gsplat, INRIA 3DGS, KIRI, Postshot).",
        )
    rest_names = sorted((name for name in types if _F_REST.fullmatch(name)), key=lambda n: int(n[7:]))
    expected_rest = [f"f_rest_{index}" for index in range(len(rest_names))]
    if len(rest_names) not in _SH_REST_COUNTS or rest_names != expected_rest:
        raise _file_error(
            path,
            f"its {len(rest_names)} f_rest_* properties are not exactly f_rest_0 .. f_rest_K-1 with "
            f"K = 0, 9, 24 or 45 (spherical-harmonic degree 0 to 3)",
            _RE_EXPORT,
        )
    for name in (*_REQUIRED, *rest_names):
        if types[name] not in ("f4", "f8"):
            raise _file_error(
                path,
                f"the property '{name}' is an integer, but splat values must be float or double",
                _RE_EXPORT,
            )
    return tuple(rest_names)


def _columns(rows: np.ndarray, names: tuple[str, ...] | list[str], dtype: type) -> np.ndarray:
    """[N, len(names)] of `dtype` from fields of the structured `rows` [N], in native byte order."""
    fields = rows.dtype.names
    positions = [fields.index(name) for name in names]
    with np.errstate(over="ignore", invalid="ignore"):  # double beyond float32 -> inf, dropped later
        if len({rows.dtype[field] for field in fields}) == 1:
            # All properties share one type (every 3DGS writer): the rows are an [N, P] matrix, and
            # slicing it is several times faster than copying strided fields one by one.
            matrix = rows.view(rows.dtype[0]).reshape(rows.shape[0], len(fields))
            first = positions[0] if positions else 0
            if positions == list(range(first, first + len(names))):
                return matrix[:, first : first + len(names)].astype(dtype)
            return matrix[:, positions].astype(dtype)
        out = np.empty((rows.shape[0], len(names)), dtype=dtype)
        for index, name in enumerate(names):
            out[:, index] = rows[name]
        return out


def _splats_from_rows(path: Path, rows: np.ndarray, rest_names: tuple[str, ...]) -> Splats:
    """Convert the file's stored values to `Splats`, dropping rows that cannot be valid splats."""
    count = rows.shape[0]
    coefficients = _SH_REST_COUNTS[len(rest_names)]
    means = _columns(rows, ["x", "y", "z"], np.float32)
    sh = np.empty((count, coefficients, 3), dtype=np.float32)
    sh[:, 0, :] = _columns(rows, ["f_dc_0", "f_dc_1", "f_dc_2"], np.float32)
    # Stored channel-major: f_rest index = channel * (B - 1) + (coefficient - 1).
    rest = _columns(rows, rest_names, np.float32).reshape(count, 3, coefficients - 1)
    sh[:, 1:, :] = rest.transpose(0, 2, 1)

    # Conversions in float64, so float32 files round-trip to within a float32 rounding.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        quaternions = _columns(rows, ["rot_0", "rot_1", "rot_2", "rot_3"], np.float64)
        norms = np.linalg.norm(quaternions, axis=1, keepdims=True)
        # Doubles beyond 1e154 overflow when squared (and below 1e-154 underflow), so those rows'
        # norms come out infinite or zero: they are divided by their largest component first.
        extreme = np.flatnonzero(~((norms[:, 0] > 1e-150) & (norms[:, 0] < 1e150)))
        if extreme.size:
            scaled = quaternions[extreme] / np.abs(quaternions[extreme]).max(axis=1, keepdims=True)
            quaternions[extreme] = scaled  # zero, infinite and NaN rows become NaN: dropped below
            norms[extreme] = np.linalg.norm(scaled, axis=1, keepdims=True)
        already_unit = np.abs(norms - 1.0) <= _QUATERNION_UNIT_TOLERANCE
        rotations = np.where(already_unit, quaternions, quaternions / norms).astype(np.float32)
        scales = np.exp(_columns(rows, ["scale_0", "scale_1", "scale_2"], np.float64))
        scales = scales.astype(np.float32)
        logits = _columns(rows, ["opacity"], np.float64)[:, 0]
        opacities = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    keep = (
        np.isfinite(means).all(axis=1)
        & np.isfinite(sh).all(axis=(1, 2))
        & np.isfinite(rotations).all(axis=1)
        & (norms[:, 0] > 0)
        & (np.isfinite(scales) & (scales > 0)).all(axis=1)
        & np.isfinite(logits)
    )
    dropped = count - int(keep.sum())
    if dropped == count:
        raise _file_error(
            path,
            f"none of its {count:,} splats is valid (NaN or infinite values, zero rotations or "
            f"scales out of range)",
            _RE_EXPORT,
        )
    if dropped:
        logger.warning(
            "Dropped %d of %d splats in '%s': NaN or infinite values, zero rotations or scales out of range.",
            dropped,
            count,
            path,
        )
        means, rotations, scales = means[keep], rotations[keep], scales[keep]
        opacities, sh = opacities[keep], sh[keep]
    return Splats(means=means, rotations=rotations, scales=scales, opacities=opacities, sh=sh)
