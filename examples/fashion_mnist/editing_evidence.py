"""Evidence for editing on the shipped Fashion-MNIST model, measured with the shipped classifier:

- inpainting: the lower half of the first N test images regenerated under their true label; the
  classifier's accuracy on the completions, next to its accuracy on the same images with the
  lower half left empty (black, the background) and on the real images;
- class-conditional editing: a central box of the first M test images regenerated under each of
  the ten labels; the fraction of completions the classifier assigns to the requested label
  (and, for comparison, to the image's own label).

    python examples/fashion_mnist/editing_evidence.py --picture docs/editing_classes.png

Prints one JSON line; --picture writes M rows of: the image, the box shown grey, the ten completions.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from fractal_ext.evaluation.fashion_classifier import DEFAULT_CLASSIFIER, load_classifier  # noqa: E402
from fractal_ext.cli.common import integer, seed, writable_output  # noqa: E402
from fractal_ext.editing import box_mask, complete, lower_half_mask  # noqa: E402
from fractal_ext.io.checkpoints import load_model  # noqa: E402
from fractal_ext.io.datasets import FashionMNIST  # noqa: E402
from fractal_ext.io.images import save_grid_png  # noqa: E402
from fractal_ext.models.registry import SHIPPED_MODEL  # noqa: E402

BOX_SIZE = 16  # the edited box: the central 16x16 pixels (of 28x28 or of the padded 32x32 images)


def accuracy(classifier, images_hwc, labels) -> float:
    return float((classifier.predict(images_hwc.permute(0, 3, 1, 2)) == labels).float().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=str(SHIPPED_MODEL))
    parser.add_argument("--classifier_path", default=str(DEFAULT_CLASSIFIER))
    parser.add_argument("--num_inpaint", type=integer(1), default=500, help="test images for the lower-half inpainting")
    parser.add_argument("--num_edit", type=integer(1), default=100, help="test images edited under each label")
    parser.add_argument("--picture_rows", type=integer(1), default=4)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--picture", default=None, help="write the class-conditional edits as a PNG grid")
    parser.add_argument("--threads", type=integer(1), default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.picture:
        writable_output(args.picture)
    start = time.time()
    model = load_model(args.model_path)
    classifier = load_classifier(args.classifier_path)
    size, channels = model.config.img_size_list[0], model.config.channels
    test = FashionMNIST("test", img_size=size, channels=channels)
    generator = torch.Generator().manual_seed(args.seed)
    results = {}

    images, labels = test.batch(torch.arange(args.num_inpaint))
    images = images.permute(0, 2, 3, 1).contiguous()  # uint8 [N, S, S, C]
    half = lower_half_mask(size)
    completed = complete(model, images, half, labels, batch_size=50, generator=generator)
    results["inpaint_lower_half"] = {
        "images": args.num_inpaint,
        "accuracy_completed": accuracy(classifier, completed, labels),
        "accuracy_lower_half_empty": accuracy(classifier, images * half[None, :, :, None], labels),
        "accuracy_real": accuracy(classifier, images, labels),
    }

    offset = (size - BOX_SIZE) // 2
    box_corners = (offset, offset, offset + BOX_SIZE, offset + BOX_SIZE)
    box = box_mask(size, *box_corners)
    images, labels = test.batch(torch.arange(args.num_edit))
    images = images.permute(0, 2, 3, 1).contiguous()
    requested = torch.arange(10).repeat(args.num_edit)  # image-major: image i under labels 0..9
    edited = complete(model, images.repeat_interleave(10, dim=0), box, requested, batch_size=50, generator=generator)
    predicted = classifier.predict(edited.permute(0, 3, 1, 2))
    own = labels.repeat_interleave(10)
    results["edit_central_box"] = {
        "images": args.num_edit, "box": box_corners,
        "fraction_assigned_requested_label": float((predicted == requested).float().mean()),
        "fraction_assigned_requested_label_other_than_own": float((predicted == requested)[requested != own].float().mean()),
        "fraction_assigned_own_label": float((predicted == own).float().mean()),
    }
    results["seconds"] = round(time.time() - start)
    if args.picture:
        rows = []
        for i in range(args.picture_rows):
            shown = torch.where(box[..., None], images[i], torch.tensor(128, dtype=torch.uint8))
            rows += [images[i], shown, *edited[10 * i : 10 * i + 10]]
        save_grid_png(torch.stack(rows), rows=args.picture_rows, path=args.picture, scale=3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
