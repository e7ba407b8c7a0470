"""Matte: a photo's coarse person mask refined at its edges, and the person's colours freed of the backdrop.

MediaPipe's person mask is computed at low resolution and upsampled: its soft edge mixes the
backdrop into the person (green or blue spill on hands and hair, floor and shadow at the feet)
and misses thin parts (fingers, strands). `refine_matte` keeps the coarse mask's confident inside
and outside and solves the band between from the photo's colours:

1. **Trimap.** Sure foreground is the coarse mask eroded by `inner_width`, sure background its
   complement eroded by `outer_width` (fractions of the person's size: the longer side of the
   mask's bounding box); the band between is unknown. Sure foreground near its edge that looks
   like the backdrop (its shadow too) or like a mix of the backdrop and the colour further in
   joins the band: MediaPipe takes contact shadows and concave corners for the person. It also
   punches holes into torsos: background the person encloses stays background only where its
   colour is the backdrop's around the person.
2. **Backdrop.** A backdrop (a wall, a green screen, a floor) is locally smooth. Its colour behind
   the band is guessed three ways: the sure background spread inwards by a normalised blur (the
   narrowest that reaches), the colour of the nearest sure-background pixel (sharp where wall
   meets floor), and each of its main colours around the person (wall, floor, shadow).
3. **Alpha.** A band pixel is a mix I = a F + (1 - a) B. For each pair of guesses (F: the nearest
   sure-foreground colour or the local mean of the sure foreground; B: those of step 2), a is the
   projection of I - B on F - B, and the pair whose mix lies nearest I wins. The least a under
   which F would still be a colour is a floor (a hair strand's colour is not among the guesses).
   Where F and B are too alike to tell apart (grey clothes on a grey wall), the coarse mask is
   kept. A pixel of a backdrop guess's chromaticity, darker, is the backdrop in shadow, unless the
   person nearby has that chromaticity too. Light mixes across a pixel or two of the outline only,
   so band pixels further than `edge_softness` from the backdrop are the person, whole.
4. **De-spill.** Where the coverage is confident, the person's colour is F = (I - (1 - a) B) / a.
   In front of a coloured backdrop the screen's light also bounces onto the person's outline: an
   edge pixel that is the nearest sure-foreground colour (up to shading) plus some of the
   backdrop's hue loses that hue; then the backdrop's hue on the edge is limited to what the
   nearest sure-foreground colour carries (the classic g <= max(r, b) of a green screen, turned
   to the measured backdrop hue), so a green shirt keeps its green and a hand loses the screen's.
   Only the band changes: elsewhere the photo's colours are kept bit for bit.

**Completing the mask** (`complete_mask`, every build): MediaPipe's mask also misses whole parts
of people in loose clothes (a side view of a bell-shaped dress lost the dress and legs, 59 % of
the person; ponytails' tips, shoes). In front of a plain backdrop the person is whatever is not
the backdrop: the backdrop is modelled from the pixels outside the mask, smoothly, rejecting
what does not fit it (the missing person, coarse to fine), and the regions off it that are
attached to the mask, within the person's reach (the mask's and the pose landmarks' box,
widened), join it; a shadow (the backdrop's chromaticity, darker) does not. MediaPipe's mask in
turn sometimes takes in the person's shadow on the floor (in one harness photo a patch a third of
the legs' size; that photo's fit scored 16 dB against 21-31 for the others): below the knees,
what is the backdrop in shadow and further than `leg_reach` from the legs' landmarks
(knee, ankle, heel, toe: where legs, shoes and trouser hems are) leaves it. A busy backdrop,
which the smooth model cannot predict, leaves the mask as it is.

Colours are solved in display (sRGB) values, where the photos' edges are mixed (the example
subjects are composited there and the fit compares premultiplied display colours); what goes in
and comes out is linear light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import AvatarError
from ..maths.colour import linear_to_srgb, srgb_to_linear

logger = logging.getLogger(__name__)

GREEN_CHROMA = np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0)  # pure green's direction off the grey axis


class MatteError(AvatarError):
    """A photo and a person mask that cannot be matted together."""


@dataclass(frozen=True)
class MatteSettings:
    """How the coarse mask's edge is re-solved. Widths are fractions of the person's size in pixels;
    colour distances are in display values."""

    inner_width: float = 0.015  # sure foreground: the coarse mask eroded by this much
    outer_width: float = 0.035  # sure background: the coarse mask's complement eroded by this much
    min_width_px: int = 2  # the least of either width
    distinct: float = 0.12  # |F - B| from which colour alone tells the person from the backdrop
    shadow_chroma: float = 0.06  # relative distance off the backdrop's colour within which it is shadow
    shadow_darkest: float = 0.2  # a pixel darker than this fraction of the backdrop is no shadow
    confident_alpha: float = 0.3  # the person's colour is unmixed only above this coverage
    edge_softness: float = 0.005  # mixed pixels lie at most this far (at least 1.5 px) from the backdrop
    clear_alpha: float = 0.1  # coverage below which a pixel is backdrop, for `edge_softness`
    mix_fit: float = 0.04  # distance within which a sure-foreground pixel is a mix with the backdrop
    coarse_pull: float = 0.02  # the cost of a unit of coverage away from the coarse mask (breaks ties)
    coloured_backdrop: float = 0.25  # saturation from which the backdrop's spill is taken off
    tint_match: float = 0.05  # relative distance within which an edge colour is its neighbour's, tinted


@dataclass(frozen=True)
class CompletionSettings:
    """How the coarse mask is completed from the backdrop (module docstring). Widths are fractions
    of the person's size in pixels; colour distances are in display values."""

    schedule: tuple[float, ...] = (0.25, 0.25, 0.12, 0.12, 0.06)  # the backdrop model's blur, per pass
    outliers: float = 6.0  # off the model by this many times its noise: not the backdrop
    distinct: float = 0.06  # ... and by at least this much
    busiest: float = 0.03  # a backdrop noisier than this about its model is not plain: no completion
    shadow_darkest: float = 0.25  # a darker pixel of the backdrop's chromaticity is no shadow
    shadow_chroma: float = 0.05  # relative distance off the backdrop's colour within which it is shadow
    reach: float = 0.15  # how far beyond the mask's and landmarks' box the person may reach
    leg_reach: float = 0.06  # a floor shadow in the mask goes only this far from the legs' landmarks
    shadow_edge: float = 0.05  # ... down to this coverage (fainter is the mask's own faint tail)
    material_reach: float = 0.5  # how far from its pixels one of the backdrop's colours is modelled
    min_pixels: int = 100  # a smaller mask is no person to complete


DEFAULT_COMPLETION = CompletionSettings()


@dataclass(frozen=True)
class Matte:
    """The refined person matte of one photo and the person's colours without the backdrop."""

    alpha: np.ndarray  # [H, W] float32 person coverage in [0, 1]
    foreground: np.ndarray  # [H, W, 3] float32 linear: the person's colours (the photo where alpha = 0)
    unknown: np.ndarray  # [H, W] bool: the band whose coverage and colour were solved
    coloured_backdrop: bool  # whether the backdrop's hue was taken off the person's edge (step 4)


@dataclass(frozen=True)
class _Trimap:
    sure_foreground: np.ndarray  # [H, W] bool
    deep: np.ndarray  # [H, W] bool: the sure foreground further than `inner` from its edge
    sure_background: np.ndarray  # [H, W] bool, only what touches the image's border
    enclosed: np.ndarray  # [H, W] bool: background the person encloses (checked against the backdrop)
    inner: int  # pixels
    outer: int
    softness: float  # pixels


def refine_matte(pixels: np.ndarray, coarse: np.ndarray, settings: MatteSettings | None = None) -> Matte:
    """The person's matte and de-spilled colours from a photo and its coarse person mask.

    pixels: [H, W, 3] linear light in [0, 1]; coarse: [H, W] person probability in [0, 1]
    (MediaPipe's). Without a clear person and backdrop in the mask, the mask is kept as it is.
    """
    settings = settings or MatteSettings()
    image, mask = _checked(pixels, coarse)
    display = linear_to_srgb(image).astype(np.float32)
    trimap = _trimap(mask, settings)
    if not trimap.sure_foreground.any() or not trimap.sure_background.any():
        logger.info("No clear person and backdrop in the mask; keeping the coarse mask.")
        return Matte(mask, image, np.zeros(mask.shape, bool), False)
    backdrop = _backdrop(display, trimap)
    person = _sure_person(display, trimap, backdrop, settings)
    person = person if person.any() else trimap.sure_foreground
    unknown = ~person & ~trimap.sure_background
    unknown &= ~(trimap.enclosed & (np.linalg.norm(display - backdrop.smooth, axis=-1) < settings.distinct))
    rows, columns = np.nonzero(unknown)
    foregrounds = [
        _nearest(_spread(display, person, 1, person), person)[rows, columns],
        _spread(display, person, trimap.inner, unknown)[rows, columns],
    ]
    backgrounds = [backdrop.smooth[rows, columns], backdrop.nearest[rows, columns]]
    backgrounds += [np.broadcast_to(colour, (len(rows), 3)) for colour in backdrop.palette]
    alpha = person.astype(np.float32)
    colour = display.copy()
    alpha[rows, columns], colour[rows, columns] = _solve_band(
        display[rows, columns],
        np.stack(foregrounds),
        np.stack(backgrounds),
        mask[rows, columns],
        backdrop.noise,
        settings,
    )
    # Light mixes across a pixel or two of the outline only: further from any backdrop, a lower
    # coverage is the person's own shading read as a mix (a lit arm against a light wall).
    opaque = unknown & (_distance(alpha >= settings.clear_alpha) > trimap.softness)
    alpha[opaque], colour[opaque] = 1.0, display[opaque]
    coloured = bool(_saturation(backdrop.colour) > settings.coloured_backdrop)
    if coloured:
        edge = unknown & (alpha > 0)
        colour = _remove_tint(colour, edge, person, backdrop.colour, settings.tint_match)
        colour = _limit_spill(colour, edge, person, backdrop.colour)
    foreground = image.copy()
    foreground[unknown] = srgb_to_linear(np.clip(colour[unknown], 0.0, 1.0))
    logger.debug(
        "Matte: backdrop %s (display), %s, %d band pixels solved.",
        np.round(backdrop.colour, 3).tolist(),
        "coloured: spill taken off" if coloured else "not coloured",
        len(rows),
    )
    return Matte(alpha=alpha, foreground=foreground, unknown=unknown, coloured_backdrop=coloured)


def complete_mask(
    pixels: np.ndarray,
    coarse: np.ndarray,
    landmarks: np.ndarray | None = None,
    settings: CompletionSettings = DEFAULT_COMPLETION,
    legs: np.ndarray | None = None,
) -> np.ndarray:
    """[H, W] float32: the coarse person mask with what is off a plain backdrop and attached to it
    added, and the floor's shadow in it taken out (module docstring); `coarse` itself where the
    backdrop is busy or no person is masked.

    pixels: [H, W, 3] linear light in [0, 1]; coarse: [H, W] person probability in [0, 1];
    landmarks: [K, 2] pixel (x, y) of the person's pose landmarks in view (feet, hands, head),
    which bound the person's reach where the mask has lost a whole part; legs: [2, 4, 2] pixel
    (x, y) of each leg's knee, ankle, heel and toe (NaN where not seen), without which no shadow
    is taken out.
    """
    image, mask = _checked(pixels, coarse)
    person = mask > 0.5
    if person.sum() < settings.min_pixels:
        return mask
    display = linear_to_srgb(image).astype(np.float32)
    rows, columns = np.nonzero(person)
    top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
    if landmarks is not None and len(landmarks):
        left, top = min(left, landmarks[:, 0].min()), min(top, landmarks[:, 1].min())
        right, bottom = max(right, landmarks[:, 0].max()), max(bottom, landmarks[:, 1].max())
    size = float(max(bottom - top, right - left) + 1)
    reach = settings.reach * size
    row_index, column_index = np.ogrid[: mask.shape[0], : mask.shape[1]]
    within = (row_index >= top - reach) & (row_index <= bottom + reach)
    within = within & (column_index >= left - reach) & (column_index <= right + reach)
    # The backdrop: a smooth model of what lies outside the (slightly widened) mask, refitted
    # without what lies off it, so the parts the mask lost fall out of it pass by pass.
    outside = ~_dilated(person, 2)
    backdrop_pixels = outside.copy()
    for fraction in settings.schedule:
        backdrop = _spread(display, backdrop_pixels, max(int(fraction * size), 2))
        residual = np.linalg.norm(display - backdrop, axis=-1)
        noise = 1.4826 * float(np.median(residual[backdrop_pixels]))
        threshold = max(settings.outliers * noise, settings.distinct)
        backdrop_pixels &= residual < threshold
    if noise > settings.busiest or not backdrop_pixels.any():
        logger.debug("Mask not completed: the backdrop is busy (noise %.3f).", noise)
        return mask
    # A backdrop of several materials (a wall and a floor) has sharp edges no smooth model
    # follows: each of its main colours is modelled on its own too, near where it is, and a pixel
    # is the backdrop if it fits any of them. Its colours are taken beyond the person's reach,
    # where the lost parts cannot be, and each is modelled from the pixels of its colour there
    # and those the smooth model kept.
    far = outside & ~within
    palette = _palette(display[far] if far.sum() >= settings.min_pixels else display[backdrop_pixels])
    if len(palette) > 1:
        distances = ((display[..., None, :] - palette) ** 2).sum(-1)
        material = np.argmin(distances, axis=-1)
        material[distances.min(axis=-1) > (2 * settings.distinct) ** 2] = -1
        radius = max(int(settings.schedule[-1] * size), 2)
        for index in range(len(palette)):
            where = (backdrop_pixels | far) & (material == index)
            near = _distance(~where) <= settings.material_reach * size
            model = _spread(display, where, radius, near)
            fit = np.where(near, np.linalg.norm(display - model, axis=-1), np.inf)
            better = fit < residual
            residual, backdrop = np.where(better, fit, residual), np.where(better[..., None], model, backdrop)
    brightness, off = _along(display.reshape(-1, 3), backdrop.reshape(-1, 3))
    shadow = (brightness >= settings.shadow_darkest) & (brightness <= 1.05) & (off < settings.shadow_chroma)
    off_backdrop = (residual > threshold) & ~shadow.reshape(mask.shape) & within
    _, labels = cv2.connectedComponents((off_backdrop | person).astype(np.uint8), connectivity=8)
    attached = np.isin(labels, np.unique(labels[person])) & ~person
    # An added pixel's coverage: how far it is off the backdrop against the most of its
    # neighbours (a mixed outline pixel is part way between the backdrop and the person).
    contrast = cv2.dilate(np.where(off_backdrop, residual, 0.0).astype(np.float32), np.ones((5, 5), np.uint8))
    coverage = np.clip(residual / np.maximum(contrast, 1e-6), 0.0, 1.0)
    added = np.where(attached, coverage, 0.0).astype(np.float32)
    logger.debug("Mask completed: %d pixels added (backdrop noise %.4f).", int((added > 0.5).sum()), noise)
    completed = np.maximum(mask, added)
    if legs is not None:
        away = _away_from_legs(legs, mask.shape, settings.leg_reach * size)
        # The shadow's soft edge goes too (MediaPipe's mask fades over it), down to `shadow_edge`.
        # Told in display values, as the completion's own shadows are: measured on the moving
        # harness subject, the same rule in linear light left its held-out views 1.5 dB lower.
        cast = (completed >= settings.shadow_edge) & shadow.reshape(mask.shape) & away
        if cast.any():
            logger.debug("Floor shadow taken out of the mask: %d pixels.", int((cast & person).sum()))
            completed[cast] = 0.0
    return completed


def _away_from_legs(legs: np.ndarray, shape: tuple[int, int], reach: float) -> np.ndarray:
    """[H, W] bool: below the higher knee and further than `reach` pixels from the polylines of
    the legs' landmarks [2, 4, 2] (knee, ankle, heel, toe; NaN where unseen); all False when no
    knee is seen."""
    seen = ~np.isnan(legs).any(axis=-1)
    if not seen[:, 0].any():
        return np.zeros(shape, bool)
    near = np.zeros(shape, np.uint8)
    for leg, shown in zip(legs, seen, strict=True):
        points = leg[shown]
        for start, end in zip(points[:-1], points[1:], strict=False):
            cv2.line(near, tuple(int(v) for v in start), tuple(int(v) for v in end), 1, 1)
        for point in points:
            near[int(np.clip(point[1], 0, shape[0] - 1)), int(np.clip(point[0], 0, shape[1] - 1))] = 1
    far = cv2.distanceTransform((1 - near).astype(np.uint8), cv2.DIST_L2, 3) > reach
    rows = np.arange(shape[0])[:, None]
    return far & (rows >= legs[seen[:, 0], 0, 1].min())


def _dilated(where: np.ndarray, radius: int) -> np.ndarray:
    return cv2.dilate(where.astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8)) > 0


@dataclass(frozen=True)
class _Backdrop:
    """What the sure background says about the backdrop behind the band (display values)."""

    smooth: np.ndarray  # [H, W, 3] the sure background spread smoothly (zero where no one asks)
    nearest: np.ndarray  # [H, W, 3] the colour of the nearest sure-background pixel (off it)
    palette: np.ndarray  # [K, 3] its main colours around the person (wall, floor, shadow)
    colour: np.ndarray  # [3] its median colour around the person
    noise: float  # robust spread of its pixels about `smooth`, one channel


def _backdrop(display: np.ndarray, trimap: _Trimap) -> _Backdrop:
    sure = trimap.sure_background
    ring = sure & (_distance(sure) <= 4 * trimap.outer)  # holds every pixel's nearest sure background
    smooth = _spread(display, sure, trimap.outer, (~sure | ring) & ~trimap.deep)
    around = display[ring]
    noise = 1.4826 * float(np.median(np.abs(around - smooth[ring])))
    return _Backdrop(
        smooth=smooth,
        nearest=_nearest(_spread(display, sure, 1, ring), ring),
        palette=_palette(around),
        colour=np.median(around, axis=0),
        noise=max(noise, 0.002),
    )


def _sure_person(
    display: np.ndarray, trimap: _Trimap, backdrop: _Backdrop, settings: MatteSettings
) -> np.ndarray:
    """[H, W] bool: the sure foreground, less the pixels near its edge that look like the backdrop,
    dimmed or not (MediaPipe sometimes takes the shadow at the feet for the person), or like a mix
    of the backdrop and the colour further in (it fills the corner between neck and shoulder):
    those are solved with the band."""
    rows, columns = np.nonzero(trimap.sure_foreground & ~trimap.deep)
    seen = display[rows, columns]
    inside = _nearest(display, trimap.deep if trimap.deep.any() else trimap.sure_foreground)[rows, columns]
    looks_backdrop = np.zeros(len(rows), bool)
    for colour in backdrop.palette:
        difference = inside - colour
        squared = (difference**2).sum(-1)
        mix = np.clip(((seen - colour) * difference).sum(-1) / np.maximum(squared, 1e-8), 0.0, 1.0)
        residual = np.linalg.norm(seen - colour - mix[:, None] * difference, axis=-1)
        mixed = (mix < 0.6) & (residual < settings.mix_fit) & (squared > settings.distinct**2)
        looks_backdrop |= _dimmed(seen, colour, settings) | mixed
    person = trimap.sure_foreground.copy()
    person[rows[looks_backdrop], columns[looks_backdrop]] = False
    return person


def _palette(colours: np.ndarray, levels: int = 12, share: float = 0.02, most: int = 6) -> np.ndarray:
    """[K, 3] the mean colours of the most common cells (at least `share` of the colours each) of
    a `levels`-cubed grid over RGB."""
    cells = np.clip((colours * levels).astype(np.int64), 0, levels - 1)
    keys = (cells[:, 0] * levels + cells[:, 1]) * levels + cells[:, 2]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, colours[:, channel], len(counts)) for channel in range(3)], axis=-1)
    common = np.argsort(counts)[::-1][:most]
    common = common[counts[common] >= share * len(colours)]
    return (sums[common] / counts[common, None]).astype(np.float32)


def _checked(pixels: np.ndarray, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo [H, W, 3] and mask [H, W] as float32 in [0, 1], or a MatteError saying what is wrong."""
    image, mask = np.asarray(pixels), np.asarray(coarse)
    if image.ndim != 3 or image.shape[2] != 3:
        raise MatteError(f"A photo to matte must be an RGB image [H, W, 3]; this one is {list(image.shape)}.")
    if mask.shape != image.shape[:2]:
        raise MatteError(
            f"The person mask is {list(mask.shape)} but its photo is {list(image.shape[:2])}; "
            "they must be the same size."
        )
    if not (np.isfinite(image).all() and np.isfinite(mask).all()):
        raise MatteError("The photo or its person mask holds NaN or infinite values; re-export the photo.")
    return np.clip(image, 0.0, 1.0).astype(np.float32), np.clip(mask, 0.0, 1.0).astype(np.float32)


def _trimap(mask: np.ndarray, settings: MatteSettings) -> _Trimap:
    """Sure foreground, sure background (split into what reaches the border and what the person
    encloses) and the band widths, from the coarse mask."""
    person = mask > 0.5
    rows, columns = np.nonzero(person)
    size = 1 + max(np.ptp(rows), np.ptp(columns)) if rows.size else 0
    inner = max(settings.min_width_px, round(settings.inner_width * size))
    outer = max(settings.min_width_px, round(settings.outer_width * size))
    background = _eroded(~person, outer)
    _, labels = cv2.connectedComponents(background.astype(np.uint8), connectivity=8)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    reaching = np.isin(labels, border[border > 0])
    softness = max(1.5, settings.edge_softness * size)
    sure = _eroded(person, inner)
    return _Trimap(sure, _eroded(sure, inner), reaching, background & ~reaching, inner, outer, softness)


def _solve_band(
    image: np.ndarray,  # [N, 3] display colours of the band's pixels
    foregrounds: np.ndarray,  # [F, N, 3] guesses of the person's colour there, the nearest first
    backgrounds: np.ndarray,  # [B, N, 3] guesses of the backdrop's colour there
    coarse: np.ndarray,  # [N] the coarse mask there
    noise: float,  # the backdrop's noise, one channel
    settings: MatteSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """[N] coverage and [N, 3] unmixed colour of each band pixel: the (F, B) pair whose mix
    a F + (1 - a) B lies nearest the pixel, then the rules of the module docstring's steps 3 and 4."""
    best = np.full(len(image), np.inf)
    alpha, person, backdrop = np.zeros(len(image)), np.zeros_like(image), np.zeros_like(image)
    for foreground in foregrounds:
        for background in backgrounds:
            difference = foreground - background
            mix = np.clip(
                ((image - background) * difference).sum(-1) / np.maximum((difference**2).sum(-1), 1e-8), 0, 1
            )
            residual = np.linalg.norm(image - background - mix[:, None] * difference, axis=-1)
            cost = residual + settings.coarse_pull * np.abs(mix - coarse)  # ties go the coarse mask's way
            better = cost < best
            best[better], alpha[better] = cost[better], mix[better]
            person[better], backdrop[better] = foreground[better], background[better]
    # Where the guessed person colour is wrong (a strand of hair beside the face), the projection
    # reads too little coverage: the least coverage under which I - (1 - a) B is still a colour
    # over a (noise allowing) is a floor the true coverage cannot be under.
    alpha = np.maximum(alpha, _least_alpha(image, backdrop, 3 * noise))
    # Colour cannot tell a person from a backdrop of nearly its colour: trust the coarse mask there.
    confidence = np.clip(np.linalg.norm(person - backdrop, axis=-1) / settings.distinct, 0.0, 1.0)
    alpha = confidence * alpha + (1 - confidence) * coarse
    alpha[_shadow(image, foregrounds[0], backgrounds, settings)] = 0.0
    confident = alpha >= settings.confident_alpha
    unmixed = (image - (1 - alpha[:, None]) * backdrop) / np.maximum(alpha[:, None], 1e-6)
    colour = np.where(confident[:, None], np.clip(unmixed, 0.0, 1.0), person)
    return alpha.astype(np.float32), colour.astype(np.float32)


def _least_alpha(image: np.ndarray, backdrop: np.ndarray, tolerance: float) -> np.ndarray:
    """[N] the least coverage a for which (I - (1 - a) B) / a stays within [0, 1] in every
    channel, with `tolerance` of slack on I."""
    under = (backdrop - image - tolerance) / np.maximum(backdrop, 1e-3)  # keeps F >= 0
    over = (image - backdrop - tolerance) / np.maximum(1 - backdrop, 1e-3)  # keeps F <= 1
    return np.clip(np.maximum(under, over).max(-1), 0.0, 1.0)


def _shadow(
    image: np.ndarray, person: np.ndarray, backgrounds: np.ndarray, settings: MatteSettings
) -> np.ndarray:
    """[N] bool: pixels that are a backdrop guess dimmed (its chromaticity, darker) where the
    person's nearest colour `person` [N, 3] has another chromaticity (a grey coat on a grey floor
    cannot be told from its shadow by colour)."""
    shadow = np.zeros(len(image), bool)
    for backdrop in backgrounds:
        _, person_off = _along(person, backdrop)
        shadow |= _dimmed(image, backdrop, settings) & (person_off > 2 * settings.shadow_chroma)
    return shadow


def _dimmed(colour: np.ndarray, backdrop: np.ndarray, settings: MatteSettings) -> np.ndarray:
    """[N] bool: whether each colour [N, 3] is the backdrop's [N, 3] or [3], in shadow or not."""
    brightness, off = _along(colour, backdrop)
    return (brightness >= settings.shadow_darkest) & (brightness <= 1.1) & (off < settings.shadow_chroma)


def _along(colour: np.ndarray, backdrop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N] the brightness of each colour [N, 3] relative to the backdrop's, and its distance off
    the backdrop's line through black relative to its own brightness."""
    scale = (colour * backdrop).sum(-1) / np.maximum((backdrop**2).sum(-1), 1e-8)
    distance = np.linalg.norm(colour - scale[:, None] * backdrop, axis=-1)
    return scale, distance / np.maximum(np.linalg.norm(colour, axis=-1), 1e-3)


def _remove_tint(
    colour: np.ndarray, edge: np.ndarray, inside: np.ndarray, backdrop: np.ndarray, tolerance: float
) -> np.ndarray:
    """colour [H, W, 3] less the backdrop's light bounced onto the person's edge: where an `edge`
    pixel is, to within `tolerance` (relative), k F + t u with F the nearest `inside` colour, k a
    shading in [0.5, 1.5], u the backdrop's hue (off grey) and t > 0, the t u goes."""
    hue = backdrop - backdrop.mean()
    hue = hue / max(float(np.linalg.norm(hue)), 1e-8)
    rows, columns = np.nonzero(edge)
    seen, reference = colour[rows, columns], _nearest(colour, inside)[rows, columns]
    # Least squares for (k, t) in seen = k reference + t hue, |hue| = 1.
    squared, across = (reference**2).sum(-1), reference @ hue
    determinant = np.maximum(squared - across**2, 1e-8)
    shading = ((reference * seen).sum(-1) - across * (seen @ hue)) / determinant
    tint = (squared * (seen @ hue) - across * (reference * seen).sum(-1)) / determinant
    residual = np.linalg.norm(seen - shading[:, None] * reference - tint[:, None] * hue, axis=-1)
    tinted = (tint > 0) & (shading >= 0.5) & (shading <= 1.5)
    tinted &= residual < tolerance * np.maximum(np.linalg.norm(seen, axis=-1), 1e-3)
    cleaned = colour.copy()
    cleaned[rows[tinted], columns[tinted]] = np.clip(seen[tinted] - tint[tinted, None] * hue, 0.0, 1.0)
    return cleaned


def _limit_spill(
    colour: np.ndarray, edge: np.ndarray, inside: np.ndarray, backdrop: np.ndarray
) -> np.ndarray:
    """colour [H, W, 3] with the backdrop's hue on the `edge` pixels limited to what the nearest
    `inside` colour carries, and at least to none: in a basis turned so that the backdrop is
    green, g - max(r, b) is capped at the inside colour's (or 0)."""
    rotation = _hue_rotation(backdrop)
    turned = colour @ rotation.T
    spill = turned[..., 1] - np.maximum(turned[..., 0], turned[..., 2])
    allowance = np.maximum(_nearest(spill[..., None], inside)[..., 0], 0.0)
    excess = np.where(edge, np.maximum(spill - allowance, 0.0), 0.0)
    # Taking `excess` off the turned green channel is, turned back, taking it along row 1 of R.
    return np.clip(colour - excess[..., None] * rotation[1], 0.0, 1.0).astype(np.float32)


def _hue_rotation(colour: np.ndarray) -> np.ndarray:
    """[3, 3] rotation about the grey axis that gives `colour` [3] the hue of pure green."""
    axis = np.ones(3) / np.sqrt(3.0)
    chroma = colour - colour.mean()
    chroma = chroma / max(float(np.linalg.norm(chroma)), 1e-8)
    cosine, sine = float(chroma @ GREEN_CHROMA), float(axis @ np.cross(chroma, GREEN_CHROMA))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + sine * cross + (1 - cosine) * cross @ cross


def _saturation(colour: np.ndarray) -> float:
    return float((colour.max() - colour.min()) / max(float(colour.max()), 1e-6))


def _spread(
    values: np.ndarray,
    where: np.ndarray,
    radius: int,
    needed: np.ndarray | None = None,
    support: float = 0.02,
) -> np.ndarray:
    """values [H, W, C] known where `where` holds, spread smoothly to the `needed` pixels (all by
    default; the others are left at zero): each takes the normalised tent blur of the narrowest
    radius (`radius`, doubling) whose window holds at least `support` known pixels."""

    def tent(array: np.ndarray, size: int) -> np.ndarray:
        kernel = (2 * size + 1, 2 * size + 1)
        once = cv2.blur(array, kernel, borderType=cv2.BORDER_CONSTANT)
        return cv2.blur(once, kernel, borderType=cv2.BORDER_CONSTANT)

    weights = where.astype(np.float32)
    weighted = values * weights[..., None]
    spread = np.zeros(values.shape, np.float32)
    missing = np.ones(where.shape, bool) if needed is None else needed.copy()
    size = max(1, radius)
    while missing.any():
        last = size >= max(where.shape)
        total = tent(weights, size)
        fresh = missing & (total > (0.0 if last else support))
        spread[fresh] = tent(weighted, size)[fresh] / total[fresh, None]
        missing &= ~fresh
        if last:
            spread[missing] = values[where].mean(axis=0)
            break
        size *= 2
    return spread


def _nearest(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """values [H, W, C] at the nearest pixel where `where` holds, for every pixel."""
    _, labels = cv2.distanceTransformWithLabels(
        (~where).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    rows, columns = np.nonzero(where)  # OpenCV numbers the zero pixels from 1 in this (raster) order
    return values[rows, columns][labels - 1]


def _distance(where: np.ndarray) -> np.ndarray:
    """[H, W] float32 distance in pixels from each pixel to the nearest pixel where `where` does not hold."""
    return cv2.distanceTransform(where.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _eroded(where: np.ndarray, radius: int) -> np.ndarray:
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(where.astype(np.uint8), disc) > 0
