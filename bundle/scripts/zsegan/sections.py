"""The 2D cross-sections the losses judge: horizontal x_par, vertical x_perp, and real crops y*.

A horizontal section x_par is one optical plane of a stack (a YX image at fixed z); a vertical
section x_perp cuts across the planes (an xz image at fixed y, or a yz image at fixed x), with z
running down the rows, so it is Z x X (or Z x Y). Only the requested sections are gathered, by
advanced indexing, so gradients flow back into the volume (a generator's output).

Random positions come from ``generator`` when given, else from torch's global CPU generator (so
``monai.utils.set_determinism`` makes them reproducible); they are drawn on the generator's device
and moved to the volume's.
"""

from __future__ import annotations

import torch

__all__ = ["horizontal_sections", "random_crops", "sample_depths", "vertical_sections", "vertical_split"]


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device, or the CPU."""
    return generator.device if generator is not None else torch.device("cpu")


def _check_volume(volume: torch.Tensor) -> None:
    """ValueError unless ``volume`` is B,C,Z,Y,X."""
    if volume.ndim != 5:
        raise ValueError(f"expected a B,C,Z,Y,X volume, got shape {tuple(volume.shape)}")


def sample_depths(
    batch: int, depth: int, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """(batch, n) long tensor: for each stack, n distinct indices in [0, depth), in random order."""
    if not 0 <= n <= depth:
        raise ValueError(f"cannot draw {n} distinct indices out of {depth}")
    order = torch.rand(batch, depth, generator=generator, device=_draw_device(generator)).argsort(dim=1)
    return order[:, :n].to(device if device is not None else order.device)


def horizontal_sections(volume: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Planes ``volume[b, :, z[b, i]]``: volume B,C,Z,Y,X, z (B, n) -> (B*n, C, Y, X).

    Row-major: stack b's n sections are rows b*n ... b*n + n - 1, in the order of z[b].
    """
    _check_volume(volume)
    if z.ndim != 2 or z.shape[0] != volume.shape[0]:
        raise ValueError(f"z must be (batch, n) with batch {volume.shape[0]}, got shape {tuple(z.shape)}")
    z = z.to(device=volume.device, dtype=torch.long)
    batch, n = z.shape
    b = torch.arange(batch, device=volume.device).repeat_interleave(n)
    # advanced indices on dims 0 and 2 (split by a slice) go first: (B*n, C, Y, X)
    return volume[b, :, z.reshape(-1)]


def vertical_split(n: int) -> tuple[int, int]:
    """How ``n`` vertical sections divide, everywhere in the bundle: (n_xz, n_yz) = (ceil(n/2), floor(n/2)),
    xz sections (fixed y) first, then yz sections (fixed x)."""
    return n - n // 2, n // 2


def vertical_sections(volume: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n vertical sections per stack: volume B,C,Z,Y,X (Y == X) -> (B*n, C, Z, X).

    For each stack, the first ceil(n/2) are xz sections ``volume[b, :, :, y, :]`` at distinct
    random y, the other floor(n/2) yz sections ``volume[b, :, :, :, x]`` at distinct random x.
    Row-major like :func:`horizontal_sections`. Y must equal X so that both kinds share a shape.
    """
    _check_volume(volume)
    batch, _, _, size_y, size_x = volume.shape
    if size_y != size_x:
        raise ValueError(
            f"vertical sections need square planes (Y == X) so xz and yz sections share a shape; "
            f"got a volume of shape {tuple(volume.shape)} (B,C,Z,Y,X)"
        )
    n_xz, n_yz = vertical_split(n)
    y = sample_depths(batch, size_y, n_xz, generator, volume.device)
    x = sample_depths(batch, size_x, n_yz, generator, volume.device)
    rows = torch.arange(batch, device=volume.device)
    xz = volume[rows.repeat_interleave(n_xz), :, :, y.reshape(-1)]  # (B*n_xz, C, Z, X)
    yz = volume[rows.repeat_interleave(n_yz), :, :, :, x.reshape(-1)]  # (B*n_yz, C, Z, Y)
    channels, depth = volume.shape[1], volume.shape[2]
    both = torch.cat(
        [xz.reshape(batch, n_xz, channels, depth, size_x), yz.reshape(batch, n_yz, channels, depth, size_y)], dim=1
    )
    return both.reshape(batch * n, channels, depth, size_x)


def random_crops(
    images: torch.Tensor, size: tuple[int, int], n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n random (h, w) crops of N,C,H,W ``images`` (images drawn with replacement) -> (n, C, h, w).

    The real examples y* for vertical sections: cut from in-focus images, shaped like Z x X.
    """
    if images.ndim != 4:
        raise ValueError(f"expected N,C,H,W images, got shape {tuple(images.shape)}")
    h, w = (int(s) for s in size)
    count, _, height, width = images.shape
    if not (1 <= h <= height and 1 <= w <= width) or count == 0:
        raise ValueError(f"cannot crop {h}x{w} from images of shape {tuple(images.shape)} (N,C,H,W)")
    device = _draw_device(generator)
    which = torch.randint(count, (n,), generator=generator, device=device).tolist()
    top = torch.randint(height - h + 1, (n,), generator=generator, device=device).tolist()
    left = torch.randint(width - w + 1, (n,), generator=generator, device=device).tolist()
    crops = [images[i, :, t : t + h, s : s + w] for i, t, s in zip(which, top, left, strict=True)]
    if not crops:
        return images.new_empty((0, images.shape[1], h, w))
    return torch.stack(crops)
