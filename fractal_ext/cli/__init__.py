"""The command lines, one module per command, each with a `main(argv=None)` that the console scripts
of pyproject.toml and the thin files under python/ call:

    fractal-sample   (sample.py)    class-conditional images from the shipped model or any checkpoint
    fractal-train    (train.py)     training, one process or under torchrun
    fractal-eval     (evaluate.py)  unconditional NLL in bits per dimension over a dataset split
    fractal-info     (info.py)      what this installation is: versions, build, kernels per device

`common.py` holds what they share: argparse types that name the option they refuse, the output
check made before the work, and the conversion of user errors into messages.
"""
