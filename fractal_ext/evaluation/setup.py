"""What an evaluation needs before it samples anything, shared by `fractal-eval generation` and
training's `--online_eval`: the feature networks (loaded, so that a missing file fails first) and
a reference that can be read in them."""
from fractal_ext.evaluation.features import ClassifierFeatures, InceptionFeatures
from fractal_ext.evaluation.reference import DATASET_PREFIXES, dataset_images, load_statistics_file

FEATURE_SPACES = ("inception", "classifier")


def default_feature_spaces(class_num: int, img_size: int) -> list[str]:
    return ["inception", "classifier"] if _fashion_like(class_num, img_size) else ["inception"]


def load_feature_spaces(names, class_num: int, img_size: int, device, inception_path=None,
                        classifier_path=None) -> list:
    """The feature spaces `names` (from FEATURE_SPACES) for images of a model of `class_num` classes and
    `img_size` pixels. Raises ValueError for unknown names, a classifier space the model's images do
    not fit, and a network file that is missing or wrong (FeatureSpaceError, a ValueError)."""
    unknown = [name for name in names if name not in FEATURE_SPACES]
    if unknown or not names:
        raise ValueError(f"feature spaces: unknown {unknown}; choose from {', '.join(FEATURE_SPACES)}")
    if "classifier" in names and not _fashion_like(class_num, img_size):
        raise ValueError("the classifier feature space: the Fashion-MNIST classifier takes 10-class 28x28 or 32x32 "
                         f"images; this model makes {class_num} classes of {img_size}x{img_size}")
    return [InceptionFeatures(inception_path, device) if name == "inception"
            else ClassifierFeatures(classifier_path, device) for name in names]


def check_reference(spec: str, spaces, img_size: int, channels: int) -> None:
    """A statistics file of the wrong shape or dimension, one given with several feature spaces, or a
    dataset reference that cannot be read is refused (ValueError / FileNotFoundError)."""
    if spec.startswith(DATASET_PREFIXES):
        dataset_images(spec, img_size, channels, limit=2)
        return
    if len(spaces) > 1:
        raise ValueError(f"the reference {spec} is a statistics file, which holds one feature space; score the "
                         "other spaces against a dataset reference (fashion_mnist:test) or name one feature space")
    load_statistics_file(spec, spaces[0].dim)


def _fashion_like(class_num: int, img_size: int) -> bool:
    return class_num == 10 and img_size in (28, 32)
