"""torch.library.opcheck on every operator: its schema (mutations declared), fake implementation,
autograd registration and aot_dispatch agree with what the kernel does, on its sample inputs."""
import pytest
import torch

from fractal_ext import ops
from op_samples import SAMPLE_INPUTS

pytestmark = pytest.mark.skipif(not ops.EXTENSION_AVAILABLE, reason="fractal_ext._C is not built")


def test_every_operator_has_sample_inputs():
    assert sorted(SAMPLE_INPUTS) == sorted(ops.OP_NAMES)


@pytest.mark.parametrize("name", ops.OP_NAMES)
def test_opcheck(name):
    args = tuple(SAMPLE_INPUTS[name]().values())
    torch.library.opcheck(getattr(torch.ops.fractal_ext, name).default, args)


@pytest.mark.parametrize("name", ["patchify", "unpatchify", "gather_neighbour_conditions"])
def test_opcheck_with_gradients(name):
    args = [x.requires_grad_() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
            for x in SAMPLE_INPUTS[name]().values()]
    torch.library.opcheck(getattr(torch.ops.fractal_ext, name).default, tuple(args))
