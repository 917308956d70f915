"""VGGFeatures and its weights: a configured file, the torch hub cache, a download, or one clear error.

Random weights only (written to a temporary file): nothing here downloads."""

import urllib.error

import pytest
import torch
from scripts.errors import InputError
from scripts.nets import vgg
from scripts.nets.vgg import VGGFeatures, layer_names, save_random_vgg_weights


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    return save_random_vgg_weights("vgg16", tmp_path_factory.mktemp("vgg") / "vgg16_random.pth", "relu3_3")


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty hub cache in tmp_path; a download attempt fails as without network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = []

    def fail(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return calls


def test_layer_names_are_torchvisions_indices():
    assert layer_names("vgg16")["relu3_3"] == 15
    names = layer_names("vgg19")
    assert [names[k] for k in ("relu1_1", "relu2_1", "relu3_1", "relu4_1")] == [1, 6, 11, 20]
    with pytest.raises(ValueError, match="arch"):
        layer_names("vgg11")


def test_features_from_a_configured_file(vgg16_file):
    features = VGGFeatures("vgg16", ("relu1_2", "relu3_3"), vgg16_file)
    x = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    out = features(x)
    assert out["relu1_2"].shape == (2, 64, 32, 32) and out["relu3_3"].shape == (2, 256, 8, 8)
    assert len(features.features) == 16  # stops at relu3_3
    torch.testing.assert_close(features(x.expand(-1, 3, -1, -1))["relu3_3"], out["relu3_3"])  # gray = RGB
    assert not any(p.requires_grad for p in features.parameters())
    out["relu3_3"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert features.weights_file == str(vgg16_file) and features.weights_tag.startswith("other sha256:")
    assert not features.train().training  # a fixed feature space


def test_imagenet_normalisation_of_the_value_range(vgg16_file):
    features = VGGFeatures("vgg16", ("relu1_1",), vgg16_file, value_range=(0.0, 1.0))
    conv = features.features[0]
    x = torch.full((1, 1, 8, 8), 0.485)  # ImageNet's red mean: the red input channel becomes 0
    expected = torch.relu(
        conv.bias
        + sum(
            conv.weight[:, c].sum((1, 2)) * (0.485 - m) / s
            for c, (m, s) in enumerate(zip(vgg.IMAGENET_MEAN, vgg.IMAGENET_STD, strict=True))
        )
    )
    torch.testing.assert_close(features(x)["relu1_1"][0, :, 4, 4], expected)


def test_a_missing_configured_file_is_one_clear_error(tmp_path, no_download):
    with pytest.raises(InputError, match="no such vgg16 weights file") as caught:
        VGGFeatures("vgg16", weights=tmp_path / "nope.pth")
    assert "vgg16-397923af.pth" in str(caught.value) and "\n" not in str(caught.value)
    assert no_download == []  # a named file is never replaced by another


def test_the_hub_cache_is_used_without_download(vgg16_file, tmp_path, no_download):
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(vgg16_file.read_bytes())
    features = VGGFeatures("vgg16")
    assert features.weights_file == str(cached) and no_download == []


def test_no_cache_and_no_download_is_one_clear_error(no_download):
    with pytest.raises(InputError, match="could not be downloaded") as caught:
        VGGFeatures("vgg19", ("relu1_1",))
    message = str(caught.value)
    assert no_download == [vgg.URLS["vgg19"]] and vgg.URLS["vgg19"] in message and "\n" not in message
    assert "vgg19_weights" in message


def test_a_file_of_other_weights_is_one_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, path)
    with pytest.raises(InputError, match="does not hold the vgg16 features"):
        VGGFeatures("vgg16", ("relu1_1",), path)
    short = save_random_vgg_weights("vgg16", tmp_path / "short.pth", up_to="relu2_2")  # stops too early
    VGGFeatures("vgg16", ("relu2_2",), short)
    with pytest.raises(InputError, match="does not hold the vgg16 features"):
        VGGFeatures("vgg16", ("relu3_3",), short)
    path.write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        VGGFeatures("vgg16", ("relu1_1",), path)


def test_only_the_published_file_is_tagged_imagenet(vgg16_file, monkeypatch):
    monkeypatch.setattr(vgg, "_sha256", lambda path: "397923af" + "0" * 56)
    assert VGGFeatures("vgg16", ("relu1_1",), vgg16_file).weights_tag == "imagenet"


def test_a_whole_torchvision_file_loads_for_a_shallow_layer(tmp_path):
    full = save_random_vgg_weights("vgg16", tmp_path / "full.pth")  # every layer, as torchvision's file
    state = torch.load(full, weights_only=True)
    assert len([k for k in state if k.endswith(".weight")]) == 13  # VGG16's 13 convolutions
    features = VGGFeatures("vgg16", ("relu1_1",), full)
    assert len(features.features) == 2
    torch.testing.assert_close(features.features[0].weight, state["features.0.weight"])


def test_scaled_random_weights_keep_the_deep_features_alive(tmp_path):
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    size = {}
    for scaled in (False, True):
        path = save_random_vgg_weights("vgg16", tmp_path / f"{scaled}.pth", "relu3_3", scaled=scaled)
        with torch.no_grad():
            size[scaled] = VGGFeatures("vgg16", ("relu3_3",), path)(images)["relu3_3"].abs().mean().item()
    assert size[False] < 0.05 < size[True]  # PyTorch's default init fades by relu3_3; He's does not
