"""The portable rasterizer: screen-space Gaussians binned into 16x16 tiles, composited front to back.

Vectorised over (tile, Gaussian in tile, pixel) so that plain torch runs it fast on a CPU:

1. binning: each visible Gaussian is listed in every tile its bounds touch; the lists are sorted by
   camera depth, so each tile holds its Gaussians front to back;
2. compositing in rounds: round r takes the next `segment` Gaussians of every tile that still has
   Gaussians and a pixel that is not yet opaque, in chunks of tiles sized to a memory budget;
   alphas are a [tiles, segment, 256] tensor (the 2D Gaussian is separable into row and column
   terms plus one cross term), transmittance a cumulative product carried from round to round, and
   the blended sums one batched matrix product. Per pixel this is exactly 3DGS's loop: alpha =
   min(0.99, o exp(power)), skipped below 1/255, and the pixel stops at the Gaussian that would
   bring its transmittance below 1e-4. Tiles whose pixels have all stopped drop out (early
   termination), which is what makes dense avatars cheap;
3. backward (hand-written, in `_TileRasterizer.backward`): the same rounds replayed front to back.
   With v_i = dL/dout . f_i + dL/dalpha_out per pixel and w_i = alpha_i T_i the blend weights, the
   loss is locally sum_i w_i v_i, so dL/dalpha_k = T_k v_k - (sum_{i>k} w_i v_i) / (1 - alpha_k);
   the suffix sum is the pixel's total sum_i w_i v_i (known from the outputs) minus a running
   prefix sum carried across rounds. Nothing per pair is kept between forward and backward, so
   memory stays at one chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..maths.projection import MIN_ALPHA
from .projection import MAX_ALPHA, MIN_TRANSMITTANCE, ScreenGaussians

TILE = 16  # tile side in pixels
TILE_PIXELS = TILE * TILE
DEFAULT_SEGMENT = 128  # Gaussians per tile per round
DEFAULT_CHUNK_ELEMENTS = 1 << 21  # tiles x segment x 256 per vectorised step (8 MB in float32)


@dataclass(frozen=True)
class TileBins:
    """Visible Gaussians listed per tile, front to back (tiles numbered camera-major, then row-major)."""

    gaussian_ids: torch.Tensor  # [P] flat ids (camera * N + gaussian), grouped by tile, by depth
    tile_starts: torch.Tensor  # [C * tiles_y * tiles_x] first entry of each tile in gaussian_ids
    tile_counts: torch.Tensor  # [C * tiles_y * tiles_x] entries per tile
    tiles_x: int
    tiles_y: int


def bin_gaussians(screen: ScreenGaussians, width: int, height: int) -> TileBins:
    """List every visible Gaussian in every tile that its screen bounds touch, sorted by depth."""
    camera_count, count = screen.visible.shape
    device = screen.visible.device
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    with torch.no_grad():
        flat_ids = screen.visible.reshape(-1).nonzero().squeeze(1)
        order = torch.argsort(screen.depths.reshape(-1)[flat_ids], stable=True)
        flat_ids = flat_ids[order]
        flat_ids = flat_ids[torch.argsort(flat_ids // count, stable=True)]  # cameras in turn, by depth

        means2d = screen.means2d.detach().reshape(-1, 2)[flat_ids]
        half_extents = screen.half_extents.reshape(-1, 2)[flat_ids]
        low = torch.floor((means2d - half_extents) / TILE).long()
        high = torch.floor((means2d + half_extents) / TILE).long()
        low_x, high_x = low[:, 0].clamp(0, tiles_x - 1), high[:, 0].clamp(0, tiles_x - 1)
        low_y, high_y = low[:, 1].clamp(0, tiles_y - 1), high[:, 1].clamp(0, tiles_y - 1)
        span_x = high_x - low_x + 1
        pair_counts = span_x * (high_y - low_y + 1)

        owner = torch.repeat_interleave(torch.arange(len(flat_ids), device=device), pair_counts)
        first_pair = torch.cumsum(pair_counts, 0) - pair_counts
        local = torch.arange(len(owner), device=device) - first_pair[owner]
        tile_x = low_x[owner] + local % span_x[owner]
        tile_y = low_y[owner] + local // span_x[owner]
        tile = (flat_ids[owner] // count) * (tiles_x * tiles_y) + tile_y * tiles_x + tile_x
        tile, by_tile = torch.sort(tile, stable=True)
        tile_counts = torch.bincount(tile, minlength=camera_count * tiles_x * tiles_y)
    return TileBins(
        gaussian_ids=flat_ids[owner[by_tile]],
        tile_starts=torch.cumsum(tile_counts, 0) - tile_counts,
        tile_counts=tile_counts,
        tiles_x=tiles_x,
        tiles_y=tiles_y,
    )


@dataclass(frozen=True)
class _Segment:
    """One chunk of tiles and the next `segment` Gaussians of each, evaluated at the tiles' pixels."""

    ids: torch.Tensor  # [t, K] padded-parameter rows (the last row is a transparent dummy)
    raw_alphas: torch.Tensor  # [t, K, 256] o exp(power), before clamping and skipping
    dx: torch.Tensor  # [t, K, 16] pixel-centre column minus mean x
    dy: torch.Tensor  # [t, K, 16] pixel-centre row minus mean y
    conics: torch.Tensor  # [t, K, 3]


class _Compositor:
    """Padded per-Gaussian parameters and the per-segment maths shared by forward and backward."""

    def __init__(self, means2d, conics, opacities, features, bins: TileBins, segment: int):
        self.bins, self.segment = bins, segment
        dummy = means2d.new_zeros(1, 1)
        self.means2d = torch.cat([means2d, dummy.expand(1, 2)])
        self.conics = torch.cat([conics, dummy.expand(1, 3)])
        self.log_opacities = torch.cat([opacities.clamp_min(1e-30).log(), dummy[0] - math.inf])
        self.features = torch.cat([features, dummy.expand(1, features.shape[1])])
        self.dummy_id = means2d.shape[0]
        self.pixel_offsets = torch.arange(TILE, device=means2d.device, dtype=means2d.dtype) + 0.5

    def evaluate(self, tiles: torch.Tensor, position: int) -> _Segment:
        bins = self.bins
        slots = position + torch.arange(self.segment, device=tiles.device)
        valid = slots[None, :] < bins.tile_counts[tiles, None]
        last_entry = max(len(bins.gaussian_ids) - 1, 0)
        entries = (bins.tile_starts[tiles, None] + slots[None, :]).clamp_max(last_entry)
        ids = torch.where(valid, bins.gaussian_ids[entries], self.dummy_id)

        in_camera = tiles % (bins.tiles_x * bins.tiles_y)
        origin_x = (in_camera % bins.tiles_x) * TILE
        origin_y = (in_camera // bins.tiles_x) * TILE
        means2d, conics = self.means2d[ids], self.conics[ids]
        dx = origin_x[:, None, None] + self.pixel_offsets - means2d[..., 0:1]  # [t, K, 16] columns
        dy = origin_y[:, None, None] + self.pixel_offsets - means2d[..., 1:2]  # [t, K, 16] rows
        a, b, c = conics[..., 0:1], conics[..., 1:2], conics[..., 2:3]
        column_term = -0.5 * a * dx * dx
        row_term = self.log_opacities[ids][..., None] - 0.5 * c * dy * dy
        power = (row_term[..., :, None] + column_term[..., None, :]).addcmul_(
            dy[..., :, None], -b[..., None] * dx[..., None, :]
        )
        raw_alphas = power.exp_().reshape(len(tiles), self.segment, TILE_PIXELS)
        return _Segment(ids=ids, raw_alphas=raw_alphas, dx=dx, dy=dy, conics=conics)


def _blend_weights(raw_alphas: torch.Tensor, start_transmittance: torch.Tensor):
    """Alphas, 1 - alphas, exclusive transmittance, inclusive transmittance and weights, [t, K, 256]."""
    alphas = raw_alphas.clamp_max(MAX_ALPHA).masked_fill_(raw_alphas < MIN_ALPHA, 0.0)
    one_minus = 1.0 - alphas
    inclusive = torch.cumprod(one_minus, dim=1).mul_(start_transmittance[:, None, :])
    exclusive = inclusive / one_minus
    weights = torch.where(inclusive >= MIN_TRANSMITTANCE, alphas * exclusive, 0.0)
    return alphas, one_minus, exclusive, inclusive, weights


def _chunk_size(segment: int, chunk_elements: int) -> int:
    """Tiles per vectorised step."""
    return max(1, chunk_elements // (segment * TILE_PIXELS))


def _tiles_to_image(tiled: torch.Tensor, bins: TileBins, camera_count: int, width: int, height: int):
    """[C * ty * tx, 256, F] per-tile values -> [C, H, W, F]."""
    channels = tiled.shape[-1]
    image = tiled.reshape(camera_count, bins.tiles_y, bins.tiles_x, TILE, TILE, channels)
    image = image.permute(0, 1, 3, 2, 4, 5).reshape(
        camera_count, bins.tiles_y * TILE, bins.tiles_x * TILE, channels
    )
    return image[:, :height, :width]


def _image_to_tiles(image: torch.Tensor, bins: TileBins) -> torch.Tensor:
    """[C, H, W, F] -> [C * ty * tx, 256, F] (zero-padded to whole tiles)."""
    camera_count, height, width, channels = image.shape
    padded = image.new_zeros(camera_count, bins.tiles_y * TILE, bins.tiles_x * TILE, channels)
    padded[:, :height, :width] = image
    tiled = padded.reshape(camera_count, bins.tiles_y, TILE, bins.tiles_x, TILE, channels)
    return tiled.permute(0, 1, 3, 2, 4, 5).reshape(-1, TILE_PIXELS, channels)


class _TileRasterizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins, camera_count, width, height, segment, chunk):
        compositor = _Compositor(means2d, conics, opacities, features, bins, segment)
        tile_total = len(bins.tile_counts)
        transmittance = means2d.new_ones(tile_total, TILE_PIXELS)
        blended = means2d.new_zeros(tile_total, TILE_PIXELS, features.shape[1])
        coverage = means2d.new_zeros(tile_total, TILE_PIXELS)
        rounds = []
        active = (bins.tile_counts > 0).nonzero().squeeze(1)
        position = 0
        while len(active):
            rounds.append((active, transmittance[active]))
            for tiles in torch.split(active, _chunk_size(segment, chunk)):
                step = compositor.evaluate(tiles, position)
                _, _, _, inclusive, weights = _blend_weights(step.raw_alphas, transmittance[tiles])
                blended[tiles] += torch.bmm(weights.transpose(1, 2), compositor.features[step.ids])
                coverage[tiles] += weights.sum(1)
                transmittance[tiles] = inclusive[:, -1]
            position += segment
            still_open = (transmittance[active] >= MIN_TRANSMITTANCE).any(1)
            active = active[still_open & (bins.tile_counts[active] > position)]
        ctx.save_for_backward(means2d, conics, opacities, features, blended, coverage)
        ctx.bins, ctx.rounds, ctx.layout = bins, rounds, (camera_count, width, height, segment, chunk)
        image = _tiles_to_image(blended, bins, camera_count, width, height)
        alpha = _tiles_to_image(coverage[..., None], bins, camera_count, width, height)
        return image, alpha

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        means2d, conics, opacities, features, blended, coverage = ctx.saved_tensors
        bins, rounds = ctx.bins, ctx.rounds
        camera_count, width, height, segment, chunk = ctx.layout
        compositor = _Compositor(means2d, conics, opacities, features, bins, segment)
        grad_blended = _image_to_tiles(grad_image, bins)
        grad_coverage = _image_to_tiles(grad_alpha, bins)[..., 0]
        # Per pixel, the loss is locally sum_i w_i v_i; its total is known from the outputs.
        total = (grad_blended * blended).sum(-1) + grad_coverage * coverage
        prefix = torch.zeros_like(total)

        rows = compositor.means2d.shape[0]
        grad_means2d = means2d.new_zeros(rows, 2)
        grad_conics = means2d.new_zeros(rows, 3)
        grad_log_opacities = means2d.new_zeros(rows)
        grad_features = means2d.new_zeros(rows, features.shape[1])
        for round_index, (active, start_transmittance) in enumerate(rounds):
            position = round_index * segment
            size = _chunk_size(segment, chunk)
            for tiles, starts in zip(
                torch.split(active, size), torch.split(start_transmittance, size), strict=True
            ):
                step = compositor.evaluate(tiles, position)
                alphas, one_minus, exclusive, inclusive, weights = _blend_weights(step.raw_alphas, starts)
                pixel_grads = grad_blended[tiles]  # [t, 256, F]
                tile_features = compositor.features[step.ids]  # [t, K, F]
                values = torch.bmm(tile_features, pixel_grads.transpose(1, 2))
                values += grad_coverage[tiles, None]
                running = torch.cumsum(weights * values, dim=1).add_(prefix[tiles, None])
                prefix[tiles] = running[:, -1]
                suffix = total[tiles, None] - running
                grad_alphas = exclusive * values - suffix / one_minus
                live = (inclusive >= MIN_TRANSMITTANCE) & (step.raw_alphas >= MIN_ALPHA)
                live &= step.raw_alphas < MAX_ALPHA
                grad_power = torch.where(live, grad_alphas * alphas, 0.0)
                grad_power = grad_power.reshape(len(tiles), segment, TILE, TILE)  # rows x columns

                by_column = grad_power.sum(2)  # [t, K, 16]
                by_row = grad_power.sum(3)
                dx, dy = step.dx, step.dy
                sum_dx, sum_dxx = (by_column * dx).sum(-1), (by_column * dx * dx).sum(-1)
                sum_dy, sum_dyy = (by_row * dy).sum(-1), (by_row * dy * dy).sum(-1)
                sum_dxdy = (torch.matmul(grad_power, dx[..., None])[..., 0] * dy).sum(-1)
                a, b, c = step.conics.unbind(-1)
                ids = step.ids.reshape(-1)
                grad_means2d.index_add_(
                    0, ids, torch.stack([a * sum_dx + b * sum_dy, b * sum_dx + c * sum_dy], -1).reshape(-1, 2)
                )
                grad_conics.index_add_(
                    0, ids, torch.stack([-0.5 * sum_dxx, -sum_dxdy, -0.5 * sum_dyy], -1).reshape(-1, 3)
                )
                grad_log_opacities.index_add_(0, ids, by_row.sum(-1).reshape(-1))
                grad_features.index_add_(
                    0, ids, torch.bmm(weights, pixel_grads).reshape(-1, features.shape[1])
                )
        count = means2d.shape[0]
        grad_opacities = grad_log_opacities[:count] / opacities.clamp_min(1e-30)
        return (
            grad_means2d[:count],
            grad_conics[:count],
            grad_opacities,
            grad_features[:count],
            None,
            None,
            None,
            None,
            None,
            None,
        )


def rasterize_tiles(
    screen: ScreenGaussians,
    opacities: torch.Tensor,  # [N], or [C, N] per camera
    features: torch.Tensor,  # [C, N, F]
    width: int,
    height: int,
    segment: int | None = None,
    chunk_elements: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend `features` front to back: ([C, H, W, F] sum_i w_i f_i, [C, H, W, 1] sum_i w_i).

    `segment` (Gaussians per tile per round) and `chunk_elements` (tiles x segment x 256 per step)
    trade speed for memory; None takes the module's defaults.
    """
    camera_count, count = screen.visible.shape
    bins = bin_gaussians(screen, width, height)
    return _TileRasterizer.apply(
        screen.means2d.reshape(camera_count * count, 2),
        screen.conics.reshape(camera_count * count, 3),
        opacities.expand(camera_count, count).reshape(-1),
        features.reshape(camera_count * count, -1),
        bins,
        camera_count,
        width,
        height,
        segment or DEFAULT_SEGMENT,
        chunk_elements or DEFAULT_CHUNK_ELEMENTS,
    )
