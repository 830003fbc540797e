"""Trains the small Fashion-MNIST classifier used by evidence.py and ships its weights.

    OMP_NUM_THREADS=1 python examples/fashion_mnist/train_classifier.py   # about 5 minutes on one CPU core
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from fractal_ext.evaluation.fashion_classifier import DEFAULT_CLASSIFIER, FashionClassifier, save_classifier  # noqa: E402
from fractal_ext.cli.common import integer, number, seed, writable_output  # noqa: E402
from fractal_ext.io.datasets import FashionMNIST  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=integer(1), default=3)
    parser.add_argument("--batch_size", type=integer(1), default=128)
    parser.add_argument("--lr", type=number(0, above=True), default=3e-3)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--output", default=str(DEFAULT_CLASSIFIER))
    args = parser.parse_args(argv)
    writable_output(args.output)

    torch.manual_seed(args.seed)
    train, test = FashionMNIST("train", args.data_path), FashionMNIST("test", args.data_path)
    model = FashionClassifier()
    steps_per_epoch = len(train) // args.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        running = 0.0
        for step in range(steps_per_epoch):
            images, labels = train.batch(order[step * args.batch_size : (step + 1) * args.batch_size])
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach())
        images, labels = test.batch(torch.arange(len(test)))
        accuracy = float((model.predict(images) == labels).float().mean())
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {running / steps_per_epoch:.4f}, "
              f"test accuracy {accuracy:.4f} ({time.time() - start:.0f} s)", flush=True)
    save_classifier(model, args.output, {"test_accuracy": accuracy, "epochs": args.epochs, "seed": args.seed})
    print(f"saved {args.output} ({sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
