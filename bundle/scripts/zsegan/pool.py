"""CycleGAN's history of generated images, which the discriminators are trained on."""

from __future__ import annotations

import torch

__all__ = ["ImagePool"]


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.).

    The discriminators see a mix of current and up to ``size`` earlier fakes.

    Each query image either passes through or is swapped for a stored earlier one (which the new
    image replaces), so D does not only chase the generator's latest output. Optional per-image
    weights (D_B's per-slice alpha) are stored and swapped together with their images.

    One pool holds one kind of section, so every image it sees has the same shape; stacking the
    returned images assumes this. Stored images stay on the device they came from; the random
    choices use torch's global generator, so ``monai.utils.set_determinism`` makes them
    reproducible. :meth:`state_dict` / :meth:`load_state_dict` (moved to the CPU) let an ignite
    ``Checkpoint`` save and restore the pool with the networks.
    """

    def __init__(self, size: int = 50):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] | None = None  # None until the first weighted query

    def __len__(self) -> int:
        """Number of stored images."""
        return len(self.images)

    def query(
        self, images: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images N,... (detached here) and optional weights (N,) -> the same number, mixed with history.

        Size 0 returns the inputs (detached). Otherwise, per image: while the pool is not full it
        is stored and returned; once full, with probability 1/2 a random stored image is returned
        and replaced by the new one, else the new one is returned. Weights are returned (or None)
        in the same order as the images.
        """
        images = images.detach()
        if weights is not None:
            weights = weights.detach().reshape(-1)
            if weights.shape[0] != images.shape[0]:
                raise ValueError(f"one weight per image needed: {images.shape[0]} images, {weights.shape[0]} weights")
        if self.size == 0:
            return images, weights
        if self.images and (weights is None) != (self.weights is None):
            raise ValueError("an ImagePool is queried either always with weights or never")
        if weights is not None and self.weights is None:
            self.weights = []

        out_images: list[torch.Tensor] = []
        out_weights: list[torch.Tensor] = []
        for i in range(images.shape[0]):
            image = images[i].clone()
            weight = weights[i].clone() if weights is not None else None
            if len(self.images) < self.size:
                self._store(len(self.images), image, weight)
            elif torch.rand(()).item() < 0.5:
                j = int(torch.randint(self.size, ()).item())
                old_image, old_weight = self.images[j], self.weights[j] if self.weights is not None else None
                self._store(j, image, weight)
                image = old_image.to(images.device)
                weight = old_weight.to(weights.device) if old_weight is not None else None
            out_images.append(image)
            if weight is not None:
                out_weights.append(weight)
        return torch.stack(out_images), (torch.stack(out_weights) if weights is not None else None)

    def _store(self, index: int, image: torch.Tensor, weight: torch.Tensor | None) -> None:
        """Put ``image`` (and its weight) at ``index``, appending when ``index`` is the length."""
        if index == len(self.images):
            self.images.append(image)
            if self.weights is not None:
                self.weights.append(weight)
        else:
            self.images[index] = image
            if self.weights is not None:
                self.weights[index] = weight

    def state_dict(self) -> dict:
        """The pool's size and contents, on the CPU."""
        return {
            "size": self.size,
            "images": [t.cpu() for t in self.images],
            "weights": None if self.weights is None else [w.cpu() for w in self.weights],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (images stay on the CPU until returned)."""
        self.size = int(state["size"])
        self.images = list(state["images"])
        self.weights = None if state["weights"] is None else list(state["weights"])
