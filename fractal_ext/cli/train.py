"""`fractal-train`: trains a FractalGen model with the official recipe, in one process or under
torchrun (options use the official code's names where it has them).

    fractal-train --model fractalmar_fmnist28_grey --epochs 1 --output_dir outputs/fmnist
    torchrun --nproc_per_node=2 python/train.py ...      # DDP (NCCL on GPU, Gloo on CPU)
"""
import argparse
import os
import sys

from fractal_ext.cli.common import device, integer, number, run_or_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "fractal-train", description="Trains a FractalGen model (the official recipe, docs/training.md). "
        "Single process: `fractal-train ...`; several: `torchrun --nproc_per_node=N python/train.py ...`.")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="fractalmar_fmnist28_grey",
                       help="named config: an official one (fractalar_in64, fractalmar_in64, ...) or one of this "
                            "project's (fractalmar_fmnist28_grey, the shipped model; fractalmar_fmnist32, RGB); "
                            "ignored with --model_config")
    model.add_argument("--model_config", default=None, help="JSON file of FractalGen keywords (a custom config)")
    model.add_argument("--img_size", type=integer(1), default=None, help="default: the model's; must match it")
    model.add_argument("--class_num", type=integer(1), default=None, help="default: the dataset's number of classes")
    model.add_argument("--label_drop_prob", type=number(0, maximum=1), default=0.1)
    model.add_argument("--r_weight", type=number(0), default=5.0, help="weight of the R channel in the training loss")
    model.add_argument("--attn_dropout", type=number(0, maximum=1, below=True), default=None, help="default: the config's")
    model.add_argument("--proj_dropout", type=number(0, maximum=1, below=True), default=None, help="default: the config's")
    model.add_argument("--grad_checkpointing", action="store_true")
    model.add_argument("--ops", choices=("fused", "reference"), default="fused",
                       help="patchify and the MAR neighbour gathering: fractal_ext's fused operators (default) "
                            "or their eager PyTorch references (the official computation; same results, slower)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch_size", type=integer(1), default=64, help="per process; effective = batch_size * world size")
    optim.add_argument("--epochs", type=number(0, above=True), default=800, help="may be fractional (the run stops mid-epoch)")
    optim.add_argument("--lr", type=number(0), default=None, help="absolute learning rate (default: blr * eff_batch / 256)")
    optim.add_argument("--blr", type=number(0), default=5e-5, help="base learning rate")
    optim.add_argument("--min_lr", type=number(0), default=0.0)
    optim.add_argument("--warmup_epochs", type=number(0), default=40)
    optim.add_argument("--weight_decay", type=number(0), default=0.05)
    optim.add_argument("--grad_clip", type=number(0), default=3.0, help="0: no clipping")
    optim.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                       help="bf16: autocast; fp16: autocast with a gradient scaler")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=("fashion_mnist", "imagefolder"), default="fashion_mnist")
    data.add_argument("--data_path", default=None,
                      help="fashion_mnist: folder of the IDX files (default /usr/share/datasets/fashion-mnist); "
                           "imagefolder: folder with train/ (class sub-folders)")
    data.add_argument("--no_hflip", dest="hflip", action="store_false", help="no random horizontal flips")
    data.add_argument("--num_workers", type=integer(0), default=2, help="data-loader processes (image folders)")

    evaluation = parser.add_argument_group("online evaluation (docs/evaluation.md)")
    evaluation.add_argument("--online_eval", action="store_true",
                            help="sample and score the current weights every --eval_freq epochs and at the end")
    evaluation.add_argument("--eval_freq", type=number(0, above=True), default=40, help="in epochs (may be fractional)")
    evaluation.add_argument("--num_eval_images", type=integer(1), default=1000,
                            help="class-balanced samples per evaluation (a multiple of the classes)")
    evaluation.add_argument("--eval_batch_size", type=integer(1), default=50, help="images per sampling batch")
    evaluation.add_argument("--eval_reference", default="fashion_mnist:test",
                            help="an .npz of mu and sigma, fashion_mnist:train|test or folder:PATH")
    evaluation.add_argument("--eval_feature_spaces", default="inception", help="comma-separated: inception, classifier")
    evaluation.add_argument("--inception_path", default=None, help="the FID Inception file (default_1.pt)")
    evaluation.add_argument("--eval_cache_dir", default=None, help="cached statistics of dataset references")
    evaluation.add_argument("--tensorboard", action="store_true",
                            help="also log to OUTPUT_DIR/tensorboard (loss, lr, grad norm, the evaluations, a sample grid)")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="./outputs/run")
    run.add_argument("--resume", default=None, help="checkpoint-last.pth, or the folder holding it")
    run.add_argument("--save_last_freq", type=number(0, above=True), default=5, help="checkpoint every this many epochs (and at the end)")
    run.add_argument("--stop_after", type=integer(1), default=None,
                     help="stop (with a checkpoint) after this many steps of this invocation; resume later")
    run.add_argument("--log_freq", type=integer(1), default=10, help="log every this many steps")
    run.add_argument("--seed", type=integer(0, 2**32 - 1), default=1,
                     help="seeds the data order, flips and every random choice of the run")
    run.add_argument("--device", type=device, default=None, help="cpu or cuda (default: cuda when available)")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    """Exit status 0 when the run ends, 2 for bad input (a message naming it, nothing written), 1
    when training itself fails (a non-finite loss: the message says where the last checkpoint is)."""
    from fractal_ext.training import NonFiniteLossError, train

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = run_or_report(parser, train, args)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary['steps']} steps, final loss {summary['final_loss']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
