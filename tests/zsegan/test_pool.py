"""ImagePool: history of fakes for the discriminators."""

import pytest
import torch
from scripts.zsegan.pool import ImagePool


def test_size_zero_passes_through():
    pool = ImagePool(0)
    images, weights = torch.randn(3, 1, 4, 4, requires_grad=True), torch.rand(3)
    out, w = pool.query(images, weights)
    assert torch.equal(out, images) and torch.equal(w, weights)
    assert not out.requires_grad
    assert len(pool) == 0


def test_fills_then_mixes_history():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    out, w = pool.query(first)
    assert torch.equal(out, first) and w is None and len(pool) == 4
    returned = []
    for step in range(20):
        batch = torch.full((2, 1, 1, 1), 100.0 + step)
        out, _ = pool.query(batch)
        assert out.shape == batch.shape
        returned += out.flatten().tolist()
    assert len(pool) == 4
    old = [v for v in returned if v < 100]
    assert old and len(old) < len(returned)  # some from history, some new
    # every returned value is either new this step or something stored earlier
    assert all(v in range(4) or v >= 100 for v in returned)


def test_weights_travel_with_their_images():
    torch.manual_seed(1)
    pool = ImagePool(3)
    for step in range(15):
        values = torch.rand(2) + step
        images = values.reshape(2, 1, 1, 1).expand(2, 1, 2, 2).clone()
        out, w = pool.query(images, weights=values * 10)
        assert torch.allclose(w, out[:, 0, 0, 0] * 10)


def test_mixing_weighted_and_unweighted_queries_is_an_error():
    pool = ImagePool(2)
    pool.query(torch.randn(1, 3), torch.ones(1))
    with pytest.raises(ValueError):
        pool.query(torch.randn(1, 3))
    with pytest.raises(ValueError):
        ImagePool(2).query(torch.randn(2, 3), torch.ones(3))


def _run(pool: ImagePool, steps: int, start: int = 0) -> list[torch.Tensor]:
    outs = []
    for step in range(start, start + steps):
        images = torch.full((2, 1, 2, 2), float(step)) + torch.arange(2.0).reshape(2, 1, 1, 1) / 10
        out, w = pool.query(images, torch.tensor([step, step + 0.1]))
        outs.append(torch.cat([out.flatten(), w]))
    return outs


def test_reproducible_under_manual_seed():
    torch.manual_seed(7)
    a = _run(ImagePool(3), 12)
    torch.manual_seed(7)
    b = _run(ImagePool(3), 12)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_state_dict_round_trip_reproduces_behaviour():
    torch.manual_seed(5)
    pool = ImagePool(3)
    _run(pool, 6)
    state = pool.state_dict()
    assert all(t.device.type == "cpu" for t in state["images"])
    rng = torch.get_rng_state()
    expected = _run(pool, 8, start=6)

    restored = ImagePool(3)
    restored.load_state_dict(state)
    torch.set_rng_state(rng)
    got = _run(restored, 8, start=6)
    assert all(torch.equal(x, y) for x, y in zip(expected, got, strict=True))

    # the state survives torch.save / torch.load (as in an ignite Checkpoint)
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    assert loaded["size"] == 3 and len(loaded["images"]) == 3
