"""Lights in Blender's units and meaning, the lighting of a scene, and its JSON and command-line forms.

Blender loads this module: numpy and the standard library only.

Units and conventions reproduced (Blender 4.2+, Cycles, the light's "Normalize" option on, its
default). Sources: the Blender manual, "Light Objects"; Cycles `scene/light.cpp`
(`Light::area`, `LightManager::device_update_lights`), `kernel/light/point.h`, `spot.h`, `area.h`
and `distant.h`.

- Colours are linear RGB (scene-referred), multiplied by the light's strength or power, as in
  Cycles (`strength = color * energy`). Blender's light Exposure is not modelled: fold it into the
  power (power * 2**exposure).
- Directions are the way the light travels: a Blender light object's local -Z axis. A sun with
  direction (0, 0, -1) shines straight down; a spot or area light points along its direction.
- **Sun**, strength S in W/m^2: the irradiance on a surface facing the sun, E = S cos(theta).
  (Cycles: distant-light `eval_fac` = 1 / disc area of the sun, so the angular size spreads S
  without changing it.)
- **Point**, power P in W: radiant intensity I = P / (4 pi) W/sr in every direction, so the
  irradiance at distance d is E = P cos(theta) / (4 pi d^2). (Cycles: `eval_fac = invarea / pi`
  with the sphere area taken as 4 for radius 0, i.e. 1 / (4 pi).) A white diffuse surface facing a
  1000 W point light 2 m away therefore has radiance 1000 / (4 pi * 4) / pi = 6.33 W/(m^2 sr):
  the "missing pi" artists meet is the Lambert BRDF's 1/pi, not the light's. Radius r makes a
  sphere light; outside it, a facing surface receives exactly the point light's irradiance
  (a uniform sphere acts as a point), and inside the sphere the irradiance stays at its surface value.
  Blender's "Soft Falloff" near-field option and light shadows are not modelled.
- **Spot**, power P in W: the point light that the cone is cut from (Cycles does not concentrate the
  power into the cone), times Cycles' `spot_light_attenuation`:
  smoothstep((cos(alpha) - cos(size / 2)) / ((1 - cos(size / 2)) * blend)), alpha the angle to
  the spot's axis, size the full cone angle (Blender's "Spot Size", 1 to 180 degrees; radians in
  the Python API) and smoothstep(t) = 3t^2 - 2t^3 clamped to [0, 1]. Blend 0 is a hard edge.
- **Area**, power P in W: a one-sided Lambertian emitter (Cycles: `eval_fac = invarea / pi`,
  radiance P / (pi A)), emitting along its direction. Here it is the equivalent disc: intensity
  (P / pi) cos(theta_e) W/sr and irradiance E = (P / pi) cos(theta_e) cos(theta) / (d^2 + A / pi),
  which is exact on the axis of a disc of area A and tends to the point form far away. Shapes
  follow Blender: SQUARE and DISK use one size (a disc's size is its diameter), RECTANGLE and
  ELLIPSE two; an ellipse's area is pi/4 * size_x * size_y. The "Spread" option is not modelled
  (its default, 180 degrees, is the Lambertian emitter).
- **Ambient**: the world's radiance as L2 real spherical harmonics (Ramamoorthi and Hanrahan 2001,
  "An efficient representation for irradiance environment maps"): 9 RGB coefficients
  L_lm = integral of L(w) Y_lm(w) dw over the sphere, in world axes (Z up), order
  (0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1), (2,0), (2,1), (2,2), with the standard real basis
  (Y_1,-1 = 0.488603 y, ... without the sign flips of the 3DGS colour harmonics). A uniform
  Blender world of colour c and strength s is radiance c * s: L_00 = 2 sqrt(pi) c s, and a white
  diffuse surface under it has radiance c * s, whatever its normal.

JSON form (`lighting_from_json`, `lighting_to_json`; what `lca-avatar render --lights scene.json`
reads and the add-on writes from a Blender scene)::

    {"version": 1,
     "ambient": {"color": [0.05, 0.05, 0.06], "strength": 1.0},       or {"sh": [[r, g, b] x 9]}
     "lights": [
       {"type": "sun", "direction": [0, 1, -1], "color": [1, 0.95, 0.9], "strength": 3},
       {"type": "point", "position": [1, -2, 2], "power": 500, "radius": 0.1},
       {"type": "spot", "position": [0, -3, 3], "direction": [0, 1, -1], "power": 800,
        "spot_size_deg": 40, "spot_blend": 0.2},
       {"type": "area", "position": [-2, -2, 2], "direction": [1, 1, -1], "power": 200,
        "shape": "rectangle", "size": 1.0, "size_y": 0.5}]}

Keys follow Blender's Python names: "spot_size" is in radians as `SpotLight.spot_size` (or give
"spot_size_deg", as Blender's panel shows it); an area light's "size" is its X size (or the only
size of a square or disc) and "size_y" the Y size of a rectangle or ellipse. "color" defaults to
white, "radius" to 0, "spot_size" to 45 degrees and "spot_blend" to 0.15 (Blender's defaults),
"shape" to square; everything else is required. Unknown keys are refused, so a typo is never
silently ignored.

Command-line form (`parse_light_spec`, `lighting_from_specs`): one light per spec,
``TYPE:KEY=VALUE;KEY=VALUE...`` with the same types and keys as the JSON, vectors written as
comma-separated numbers, and ``ambient:color=R,G,B;strength=S`` for a uniform world::

    sun:direction=0,1,-1;color=1,0.9,0.8;strength=3
    point:position=1,-2,2;power=100;radius=0.05
    spot:position=0,-3,3;direction=0,1,-1;power=800;spot_size_deg=40;spot_blend=0.2
    area:position=-2,-2,2;direction=1,1,-1;power=200;shape=disk;size=0.5
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LightingError

Vector3 = tuple[float, float, float]

LIGHTING_FORMAT_VERSION = 1
MAX_LIGHTS = 64  # the viewport's shader holds a fixed number of lights
MAX_LIGHTING_FILE_BYTES = 1024**2
AREA_SHAPES = ("SQUARE", "RECTANGLE", "DISK", "ELLIPSE")
DEFAULT_SPOT_SIZE_RAD = math.radians(45.0)  # Blender's default spot size
DEFAULT_SPOT_BLEND = 0.15  # Blender's default spot blend
_SQRT_4PI = 2.0 * math.sqrt(math.pi)  # L_00 of a uniform radiance of 1


def _vector(name: str, value: Any, *, nonzero: bool = False, nonnegative: bool = False) -> Vector3:
    try:
        items = list(value)
        components = tuple(float(item) for item in items if not isinstance(item, bool | str | bytes))
    except (TypeError, ValueError):
        items, components = [], ()
    if len(items) != 3 or len(components) != 3:
        raise LightingError(f"'{name}' must be three numbers, found {value!r}.")
    if not all(math.isfinite(component) for component in components):
        raise LightingError(f"'{name}' must be finite numbers, found {value!r}.")
    if nonzero and not any(components):
        raise LightingError(f"'{name}' must not be (0, 0, 0): it gives the light's direction.")
    if nonnegative and min(components) < 0:
        raise LightingError(f"'{name}' must not be negative, found {value!r}.")
    x, y, z = components
    return (x, y, z)


def _number(name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise LightingError(f"'{name}' must be a number, found {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise LightingError(f"'{name}' must be a finite number, found {value!r}.")
    too_low = number <= low if low_open else number < low
    if too_low or number > high:
        lower = f"more than {low:g}" if low_open else f"at least {low:g}"
        bound = lower if high == math.inf else f"{lower} and at most {high:g}"
        raise LightingError(f"'{name}' must be {bound}, found {value!r}.")
    return number


@dataclass(frozen=True)
class SunLight:
    """Parallel light from far away (Blender's Sun): `strength_w_m2` is the irradiance it gives."""

    direction: Vector3  # the way the light travels (the light object's -Z axis)
    color: Vector3 = (1.0, 1.0, 1.0)  # linear RGB
    strength_w_m2: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", _vector("direction", self.direction, nonzero=True))
        object.__setattr__(self, "color", _vector("color", self.color, nonnegative=True))
        object.__setattr__(self, "strength_w_m2", _number("strength", self.strength_w_m2, 0.0))


@dataclass(frozen=True)
class PointLight:
    """Light radiating equally in all directions from a point or a small sphere (Blender's Point)."""

    position: Vector3  # metres
    color: Vector3 = (1.0, 1.0, 1.0)
    power_w: float = 1000.0
    radius: float = 0.0  # metres; a sphere light when positive

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _vector("position", self.position))
        object.__setattr__(self, "color", _vector("color", self.color, nonnegative=True))
        object.__setattr__(self, "power_w", _number("power", self.power_w, 0.0))
        object.__setattr__(self, "radius", _number("radius", self.radius, 0.0))


@dataclass(frozen=True)
class SpotLight:
    """A point light cut to a cone with a soft edge (Blender's Spot)."""

    position: Vector3
    direction: Vector3  # the cone's axis, the way the light travels
    color: Vector3 = (1.0, 1.0, 1.0)
    power_w: float = 1000.0  # the power of the point light the cone is cut from
    spot_size_rad: float = DEFAULT_SPOT_SIZE_RAD  # full cone angle
    spot_blend: float = DEFAULT_SPOT_BLEND  # 0 = hard edge, 1 = soft from the axis out
    radius: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _vector("position", self.position))
        object.__setattr__(self, "direction", _vector("direction", self.direction, nonzero=True))
        object.__setattr__(self, "color", _vector("color", self.color, nonnegative=True))
        object.__setattr__(self, "power_w", _number("power", self.power_w, 0.0))
        try:
            spot_size = _number("spot_size", self.spot_size_rad, 0.0, math.pi, low_open=True)
        except LightingError as error:
            raise LightingError(
                f"{error} It is the cone's full angle in radians (give 'spot_size_deg' for degrees)."
            ) from None
        object.__setattr__(self, "spot_size_rad", spot_size)
        object.__setattr__(self, "spot_blend", _number("spot_blend", self.spot_blend, 0.0, 1.0))
        object.__setattr__(self, "radius", _number("radius", self.radius, 0.0))


@dataclass(frozen=True)
class AreaLight:
    """A one-sided Lambertian panel (Blender's Area), shaded as the disc of the same area."""

    position: Vector3
    direction: Vector3  # the panel's facing, the way the light travels
    color: Vector3 = (1.0, 1.0, 1.0)
    power_w: float = 10.0
    size_x: float = 1.0  # metres (a disc's diameter)
    size_y: float = 1.0  # equal to size_x for SQUARE and DISK
    shape: str = "SQUARE"  # SQUARE, RECTANGLE, DISK or ELLIPSE, as Blender names them

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _vector("position", self.position))
        object.__setattr__(self, "direction", _vector("direction", self.direction, nonzero=True))
        object.__setattr__(self, "color", _vector("color", self.color, nonnegative=True))
        object.__setattr__(self, "power_w", _number("power", self.power_w, 0.0))
        object.__setattr__(self, "size_x", _number("size", self.size_x, 0.0, low_open=True))
        object.__setattr__(self, "size_y", _number("size_y", self.size_y, 0.0, low_open=True))
        shape = str(self.shape).upper()
        if shape not in AREA_SHAPES:
            raise LightingError(
                f"'shape' must be one of {', '.join(s.lower() for s in AREA_SHAPES)}, found {self.shape!r}."
            )
        object.__setattr__(self, "shape", shape)
        if shape in ("SQUARE", "DISK") and self.size_x != self.size_y:
            raise LightingError(
                f"A {shape.lower()} area light has one size; use shape 'rectangle' or 'ellipse' "
                f"for sizes {self.size_x:g} x {self.size_y:g}."
            )

    @property
    def area_m2(self) -> float:
        """The emitting area in square metres."""
        rectangle = self.size_x * self.size_y
        return rectangle * math.pi / 4 if self.shape in ("DISK", "ELLIPSE") else rectangle


Light = SunLight | PointLight | SpotLight | AreaLight


@dataclass(frozen=True)
class AmbientSH:
    """The world's radiance as L2 spherical harmonics: 9 RGB coefficients (see the module docstring)."""

    coefficients: tuple[Vector3, ...] = ((0.0, 0.0, 0.0),) * 9

    def __post_init__(self) -> None:
        rows = self.coefficients
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence | np.ndarray) or len(rows) != 9:
            raise LightingError("'sh' must be 9 rows of three numbers (L2 spherical harmonics).")
        object.__setattr__(
            self, "coefficients", tuple(_vector(f"sh[{index}]", row) for index, row in enumerate(rows))
        )

    @classmethod
    def uniform(cls, color: Sequence[float] = (1.0, 1.0, 1.0), strength: float = 1.0) -> AmbientSH:
        """A uniform world of a colour and strength (Blender's World "Color" and "Strength")."""
        red, green, blue = _vector("color", color, nonnegative=True)
        scale = _SQRT_4PI * _number("strength", strength, 0.0)
        return cls(((red * scale, green * scale, blue * scale),) + ((0.0, 0.0, 0.0),) * 8)

    def as_array(self) -> np.ndarray:
        """[9, 3] float64 coefficients."""
        return np.array(self.coefficients, dtype=np.float64)


@dataclass(frozen=True)
class Lighting:
    """Everything that lights an avatar: an ambient world and a list of lights."""

    ambient: AmbientSH = field(default_factory=AmbientSH)
    lights: tuple[Light, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.ambient, AmbientSH):
            raise LightingError("The ambient light must be an AmbientSH.")
        lights = tuple(self.lights)
        for light in lights:
            if not isinstance(light, Light):
                raise LightingError(f"Not a light: {light!r}.")
        if len(lights) > MAX_LIGHTS:
            raise LightingError(f"At most {MAX_LIGHTS} lights are supported, found {len(lights)}.")
        object.__setattr__(self, "lights", lights)


# JSON and command-line forms --------------------------------------------------------------------

_TYPE_NAMES = {SunLight: "sun", PointLight: "point", SpotLight: "spot", AreaLight: "area"}
_KEYS = {
    "sun": ("direction", "color", "strength"),
    "point": ("position", "color", "power", "radius"),
    "spot": ("position", "direction", "color", "power", "spot_size", "spot_size_deg", "spot_blend", "radius"),
    "area": ("position", "direction", "color", "power", "shape", "size", "size_y"),
    "ambient": ("color", "strength", "sh"),
}


def _required(settings: Mapping[str, Any], key: str) -> Any:
    if key not in settings:
        raise LightingError(f"'{key}' is missing.")
    return settings[key]


def _light_from_settings(kind: str, settings: Mapping[str, Any]) -> Light:
    """A light from its JSON settings (`type` already removed); errors name the faulty key."""
    unknown = sorted(set(settings) - set(_KEYS[kind]))
    if unknown:
        raise LightingError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}; "
            f"a {kind} light takes {', '.join(_KEYS[kind])}."
        )
    color = settings.get("color", (1.0, 1.0, 1.0))
    if kind == "sun":
        return SunLight(_required(settings, "direction"), color, _required(settings, "strength"))
    if kind == "point":
        return PointLight(
            _required(settings, "position"), color, _required(settings, "power"), settings.get("radius", 0.0)
        )
    if kind == "spot":
        if "spot_size" in settings and "spot_size_deg" in settings:
            raise LightingError("give 'spot_size' (radians) or 'spot_size_deg' (degrees), not both.")
        spot_size = settings.get("spot_size", DEFAULT_SPOT_SIZE_RAD)
        if "spot_size_deg" in settings:
            spot_size = math.radians(
                _number("spot_size_deg", settings["spot_size_deg"], 0.0, 180.0, low_open=True)
            )
        return SpotLight(
            _required(settings, "position"),
            _required(settings, "direction"),
            color,
            _required(settings, "power"),
            spot_size,
            settings.get("spot_blend", DEFAULT_SPOT_BLEND),
            settings.get("radius", 0.0),
        )
    shape = str(settings.get("shape", "SQUARE")).upper()
    size = _required(settings, "size")
    if shape in ("SQUARE", "DISK") and "size_y" in settings:
        raise LightingError(
            f"a {shape.lower()} area light has one 'size'; 'size_y' is for rectangles and ellipses."
        )
    size_y = _required(settings, "size_y") if shape in ("RECTANGLE", "ELLIPSE") else size
    return AreaLight(
        _required(settings, "position"),
        _required(settings, "direction"),
        color,
        _required(settings, "power"),
        size,
        size_y,
        settings.get("shape", "SQUARE"),
    )


def _ambient_from_settings(settings: Mapping[str, Any]) -> AmbientSH:
    unknown = sorted(set(settings) - set(_KEYS["ambient"]))
    if unknown:
        raise LightingError(f"unknown ambient setting {', '.join(repr(k) for k in unknown)}.")
    if "sh" in settings:
        if "color" in settings or "strength" in settings:
            raise LightingError("give the ambient either as 'sh' or as 'color' and 'strength', not both.")
        return AmbientSH(settings["sh"])
    return AmbientSH.uniform(settings.get("color", (1.0, 1.0, 1.0)), settings.get("strength", 1.0))


def light_from_json(data: Mapping[str, Any]) -> Light:
    """One light from its JSON object (see the module docstring); raises LightingError."""
    if not isinstance(data, Mapping):
        raise LightingError(f"a light must be a JSON object, found {type(data).__name__}.")
    kind = data.get("type")
    if kind not in ("sun", "point", "spot", "area"):
        raise LightingError(f"'type' must be sun, point, spot or area, found {kind!r}.")
    return _light_from_settings(kind, {key: value for key, value in data.items() if key != "type"})


def lighting_from_json(data: Mapping[str, Any]) -> Lighting:
    """A Lighting from its JSON form (see the module docstring); raises LightingError saying what is wrong."""
    if not isinstance(data, Mapping):
        raise LightingError(f"Lighting must be a JSON object, found {type(data).__name__}.")
    unknown = sorted(set(data) - {"version", "ambient", "lights"})
    if unknown:
        raise LightingError(
            f"Unknown lighting setting {', '.join(repr(k) for k in unknown)}; "
            "expected version, ambient and lights."
        )
    version = data.get("version", LIGHTING_FORMAT_VERSION)
    if version != LIGHTING_FORMAT_VERSION or isinstance(version, bool):
        raise LightingError(
            f"Lighting version {version!r} is not supported (this version reads {LIGHTING_FORMAT_VERSION})."
        )
    if "ambient" in data and not isinstance(data["ambient"], Mapping):
        raise LightingError("Ambient light: must be a JSON object.")
    try:
        ambient = _ambient_from_settings(data["ambient"]) if "ambient" in data else AmbientSH()
    except LightingError as error:
        raise LightingError(f"Ambient light: {error}") from None
    entries = data.get("lights", [])
    if not isinstance(entries, list):
        raise LightingError("'lights' must be a list of lights.")
    if len(entries) > MAX_LIGHTS:
        raise LightingError(f"At most {MAX_LIGHTS} lights are supported, found {len(entries)}.")
    lights = []
    for number, entry in enumerate(entries, start=1):
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        try:
            lights.append(light_from_json(entry))
        except LightingError as error:
            label = f"Light {number} ({kind})" if kind in _TYPE_NAMES.values() else f"Light {number}"
            raise LightingError(f"{label}: {error}") from None
    return Lighting(ambient, tuple(lights))


def light_to_json(light: Light) -> dict[str, Any]:
    """A light's JSON object (lossless: `light_from_json` gives back an equal light)."""
    kind = _TYPE_NAMES[type(light)]
    data: dict[str, Any] = {"type": kind}
    if isinstance(light, SunLight):
        return data | {
            "direction": list(light.direction),
            "color": list(light.color),
            "strength": light.strength_w_m2,
        }
    data |= {"position": list(light.position)}
    if isinstance(light, SpotLight | AreaLight):
        data["direction"] = list(light.direction)
    data |= {"color": list(light.color), "power": light.power_w}
    if isinstance(light, PointLight | SpotLight):
        data["radius"] = light.radius
    if isinstance(light, SpotLight):
        data |= {"spot_size": light.spot_size_rad, "spot_blend": light.spot_blend}
    if isinstance(light, AreaLight):
        data |= {"shape": light.shape.lower(), "size": light.size_x}
        if light.shape in ("RECTANGLE", "ELLIPSE"):
            data["size_y"] = light.size_y
    return data


def lighting_to_json(lighting: Lighting) -> dict[str, Any]:
    """The JSON form of a Lighting (lossless)."""
    return {
        "version": LIGHTING_FORMAT_VERSION,
        "ambient": {"sh": [list(row) for row in lighting.ambient.coefficients]},
        "lights": [light_to_json(light) for light in lighting.lights],
    }


def read_lighting_file(path: str | Path) -> Lighting:
    """Read a lighting JSON file (`--lights scene.json`); raises LightingError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_LIGHTING_FILE_BYTES + 1)
    except OSError as error:
        raise LightingError(f"Cannot read the lighting file '{path}': {error.strerror}.") from None
    if len(raw) > MAX_LIGHTING_FILE_BYTES:
        raise LightingError(f"The lighting file '{path}' is larger than {MAX_LIGHTING_FILE_BYTES} bytes.")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        raise LightingError(f"The lighting file '{path}' is not valid JSON: {error}.") from None
    try:
        return lighting_from_json(data)
    except LightingError as error:
        raise LightingError(f"In the lighting file '{path}': {error}") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def parse_light_spec(spec: str) -> Light | AmbientSH:
    """A light (or a uniform ambient) from a command-line spec such as
    ``sun:direction=0,1,-1;strength=3`` (syntax in the module docstring); raises LightingError."""
    try:
        return _parse_spec(spec)
    except LightingError as error:
        raise LightingError(f"Light '{spec}': {error}") from None


def _parse_spec(spec: str) -> Light | AmbientSH:
    kind, colon, body = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not colon or kind not in _KEYS:
        raise LightingError("write TYPE:KEY=VALUE;KEY=VALUE... with TYPE sun, point, spot, area or ambient.")
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in body.split(";"))):
        key, equals, text = (piece.strip() for piece in item.partition("="))
        if not equals or not key or not text:
            raise LightingError(f"'{item}' is not KEY=VALUE.")
        if key in settings:
            raise LightingError(f"'{key}' is given twice.")
        settings[key] = text if key == "shape" else _spec_value(key, text)
    if kind == "ambient":
        return _ambient_from_settings(settings)
    return _light_from_settings(kind, settings)


def _spec_value(key: str, text: str) -> float | list[float]:
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        raise LightingError(f"'{key}' must be numbers separated by commas, found '{text}'.") from None
    return values[0] if len(values) == 1 else values


def lighting_from_specs(specs: Sequence[str]) -> Lighting:
    """A Lighting from command-line specs: any number of lights and at most one ambient."""
    ambients = []
    lights = []
    for spec in specs:
        parsed = parse_light_spec(spec)
        (ambients if isinstance(parsed, AmbientSH) else lights).append(parsed)
    if len(ambients) > 1:
        raise LightingError("Give at most one ambient light.")
    if len(lights) > MAX_LIGHTS:
        raise LightingError(f"At most {MAX_LIGHTS} lights are supported, found {len(lights)}.")
    return Lighting(ambients[0] if ambients else AmbientSH(), tuple(lights))
