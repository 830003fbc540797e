"""`fractal-info [--json]`: what this installation of fractal_ext is.

Prints the package and torch versions, the CUDA runtime, whether the compiled extension loaded
(or why not), the CUDA architectures it was compiled for, and for each operator which devices run
a native kernel ("native"), the plain-PyTorch reference ("reference") or nothing ("missing").
"""
import argparse
import json
import sys
import warnings

DEVICES = ("CPU", "CUDA")


def collect() -> dict:
    """The report as a dict (the --json output)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the extension-missing warning is reported below
        import torch

        import fractal_ext
        from fractal_ext import ops
        from fractal_ext.ops import extension as _extension

    extension = _extension._C
    report = {
        "fractal_ext_version": fractal_ext.__version__,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "extension_loaded": extension is not None,
        "extension_error": ops.extension.LOAD_ERROR,
        "extension_with_cuda": bool(getattr(extension, "WITH_CUDA", False)),
        "extension_cuda_archs": getattr(extension, "CUDA_ARCHS", ""),
        "extension_cuda_version": getattr(extension, "CUDA_VERSION", 0),
        "extension_torch_version": getattr(extension, "TORCH_VERSION", None),
        "ops": {},
    }
    for name in ops.OP_NAMES:
        kernels = {}
        for device in DEVICES:
            if extension is None:
                kernels[device] = "reference"
            elif not torch._C._dispatch_has_kernel_for_dispatch_key(f"fractal_ext::{name}", device):
                kernels[device] = "missing"
            elif device == "CUDA" and name in ops.REFERENCE_CUDA_OPS:
                kernels[device] = "reference"
            else:
                kernels[device] = "native"
        report["ops"][name] = kernels
    from fractal_ext.sampler.graphs import graph_safe_on_cuda

    report["cuda_graphs_default"] = graph_safe_on_cuda()  # what model.sample(cuda_graphs=None) does on CUDA
    return report


def _format_cuda_version(version: int) -> str:
    return f"{version // 1000}.{(version % 1000) // 10}" if version else "-"


def render(report: dict) -> str:
    lines = [
        f"fractal_ext      {report['fractal_ext_version']}",
        f"torch            {report['torch_version']} (CUDA {report['torch_cuda_version'] or 'none'})",
        f"CUDA devices     {', '.join(report['cuda_devices']) or 'none'}",
    ]
    if report["extension_loaded"]:
        build = "CUDA" if report["extension_with_cuda"] else "CPU-only"
        lines.append(f"extension        loaded, {build} build against torch {report['extension_torch_version']}")
        if report["extension_with_cuda"]:
            lines.append(
                f"CUDA archs       {report['extension_cuda_archs']} "
                f"(runtime {_format_cuda_version(report['extension_cuda_version'])})"
            )
    else:
        lines.append(f"extension        NOT loaded: {report['extension_error']}")
    lines.append("CUDA graphs      " + ("on by default when sampling on CUDA" if report["cuda_graphs_default"]
                                      else "off: kv_cache_attention has no CUDA kernel in this build"))
    width = max(len(name) for name in report["ops"])
    lines.append("")
    lines.append(f"{'op'.ljust(width)}  " + "  ".join(d.ljust(9) for d in DEVICES))
    for name, kernels in report["ops"].items():
        lines.append(f"{name.ljust(width)}  " + "  ".join(kernels[d].ljust(9) for d in DEVICES))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fractal-info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
