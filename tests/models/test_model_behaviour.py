"""Sampling controls, argument checks, training forward and NLL of the eager models."""
import math

import pytest
import torch

from fractal_ext.evaluation import bits_per_dim
from fractal_ext.models import FractalGen
from fractal_ext.sampler import generate
from reference_models import build_reference_model, normalised_images, reference_entry

SAMPLE_ARGS = dict(num_iter_list=[4, 4], cfg=2.0, cfg_schedule="linear", temperature=1.0, filter_threshold=1e-3)


def sample(model, labels, seed=None, implementation="fast", **overrides):
    args = {**SAMPLE_ARGS, **overrides}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    cond_list = model.build_cond_list(labels, args["cfg"])
    return model.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                        args["filter_threshold"], generator=generator, implementation=implementation)


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar"])
def test_seeded_sampling_reproduces_and_seeds_differ(name):
    model = build_reference_model(name)
    labels = torch.tensor([1, 5])
    first, again, other = sample(model, labels, 7), sample(model, labels, 7), sample(model, labels, 8)
    assert first.shape == (2, 3, 16, 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampling_without_guidance_uses_unpaired_rows():
    model = build_reference_model("tiny_mar")
    images = sample(model, torch.tensor([0, 1, 2]), seed=0, cfg=1.0, cfg_schedule="constant")
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_iter_list=[4]), "num_iter_list"),
        (dict(num_iter_list=[4, 4, 4]), "num_iter_list needs one entry per generator level"),
        (dict(num_iter_list=[4, 0]), "num_iter_list"),
        (dict(num_iter_list=[4, 2.5]), "integers >= 1"),
        (dict(num_iter_list=[4, float("nan")]), "integers >= 1"),
        (dict(cfg=0.5), "cfg must be a finite number >= 1"),
        (dict(cfg=float("nan")), "cfg must be a finite number >= 1"),
        (dict(cfg=float("inf")), "cfg must be a finite number >= 1"),
        (dict(temperature=0.0), "temperature must be a finite number > 0"),
        (dict(temperature=float("inf")), "temperature must be a finite number > 0"),
        (dict(filter_threshold=float("nan")), "filter_threshold"),
        (dict(cfg_schedule="cosine"), "cfg_schedule"),
        (dict(filter_threshold=2.0), "filter_threshold"),
    ],
)
def test_bad_sampling_arguments(overrides, message):
    model = build_reference_model("tiny_mar")
    with pytest.raises(ValueError, match=message):
        sample(model, torch.tensor([1]), seed=0, **overrides)


@pytest.mark.parametrize("implementation", ["fast", "eager"])
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda cond: cond.double(), r"cond_list\[0\] must be a float32 \[rows, 64\] tensor on cpu.*float64"),
        (lambda cond: cond[:, :5], r"cond_list\[0\] must be .*\(4, 5\)"),
        (lambda cond: cond[None], r"cond_list\[0\] must be .*\(1, 4, 64\)"),
        (lambda cond: cond[:0], "no rows"),
        (lambda cond: cond[:3], "an even count"),
        (lambda cond: cond.tolist(), r"cond_list\[0\] must be .*got list"),
    ],
)
def test_bad_condition_lists(implementation, change, message):
    model = build_reference_model("tiny_mar")
    cond_list = [change(cond) for cond in model.build_cond_list(torch.tensor([1, 2]), 3.0)]
    with pytest.raises(ValueError, match=message):
        model.sample(cond_list, [2, 2], 3.0, "linear", 1.0, 1e-4, implementation=implementation)
    if isinstance(cond_list[0], torch.Tensor):  # a mismatch in a later slot is named too
        good = model.build_cond_list(torch.tensor([1, 2]), 3.0)[0]
        with pytest.raises(ValueError, match=r"cond_list\[3\]|no rows|even count"):
            model.sample([good] * 3 + cond_list[3:], [2, 2], 3.0, "linear", 1.0, 1e-4, implementation=implementation)


@pytest.mark.parametrize("implementation", ["fast", "eager"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_cast_weights_are_refused_with_the_autocast_alternative(implementation, dtype):
    model = build_reference_model("tiny_ar").to(dtype)
    with pytest.raises(ValueError, match=rf"float32 weights, got \['{dtype}'\].*precision='bf16' or 'fp16'"):
        sample(model, torch.tensor([1]), seed=0, implementation=implementation)


def test_generating_no_labels_gives_no_images():
    model = build_reference_model("tiny_mar")
    assert generate(model, []).shape == (0, 16, 16, 3)
    assert generate(model, torch.tensor([], dtype=torch.long), output="normalised").shape == (0, 3, 16, 16)


def test_bad_labels():
    model = build_reference_model("tiny_mar")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        model.build_cond_list(torch.tensor([3, 10]), 2.0)
    with pytest.raises(ValueError, match="1-D integer"):
        model.build_cond_list(torch.tensor([1.0]), 2.0)


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar", "tiny_mar4_gp"])
def test_training_forward_backward(name):
    model = build_reference_model(name).train()
    images, labels = normalised_images(3, 16), torch.tensor([0, 4, 9])
    loss = model(images, labels, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss.dim() == 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


def test_training_uses_the_training_loss_weights():
    """Train mode weights the R channel by r_weight; eval mode averages the three channels."""
    model = build_reference_model("tiny_ar")
    head = model.next_fractal.next_fractal
    head.r_weight = 5.0
    cond, target = torch.randn(8, 32), normalised_images(8, 1).reshape(8, 3)
    eval_loss = head.eval()(target, [cond], generator=torch.Generator().manual_seed(0))
    train_loss = head.train()(target, [cond], generator=torch.Generator().manual_seed(0))
    logits, tokens = head.predict(target, [cond], generator=torch.Generator().manual_seed(0))
    ce = [torch.nn.functional.cross_entropy(logits[:, i], tokens[:, i]) for i in range(3)]
    torch.testing.assert_close(eval_loss, sum(ce) / 3)
    torch.testing.assert_close(train_loss, (5 * ce[0] + ce[1] + ce[2]) / 7)


def test_label_dropout_in_training_and_unconditional_eval():
    model = build_reference_model("tiny_mar")
    labels = torch.arange(10).repeat(50)
    model.train()
    dropped = (model.class_condition(labels, torch.Generator().manual_seed(0)) == model.fake_latent).all(-1)
    assert 0.05 < dropped.float().mean() < 0.15  # label_drop_prob = 0.1
    model.eval()
    assert (model.class_condition(labels) == model.fake_latent).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    config = dict(reference_entry("tiny_mar")["config"], attn_dropout=0.0, proj_dropout=0.0)
    plain = build_reference_model("tiny_mar").train()
    checkpointed = FractalGen(**config, grad_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    images, labels = normalised_images(2, 16), torch.tensor([3, 4])
    for model in (plain, checkpointed):
        model(images, labels, generator=torch.Generator().manual_seed(1)).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (torch.full((1, 3, 16, 16), 10.0), torch.tensor([0]), "normalised"),
        (torch.full((1, 3, 16, 16), float("nan")), torch.tensor([0]), "normalised .* or NaN"),
        (torch.zeros(1, 3, 8, 8), torch.tensor([0]), r"\[B >= 1, 3, 16, 16\]"),
        (torch.zeros(0, 3, 16, 16), torch.tensor([], dtype=torch.long), r"\[B >= 1, 3, 16, 16\]"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.float64), torch.tensor([0]), "float32 like the model's weights, got torch.float64"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.tensor([0]), "float32 like the model's weights, got torch.uint8"),
        (torch.zeros(2, 3, 16, 16), torch.tensor([0]), r"one class per image \(2, on cpu\), got 1 on cpu"),
        (torch.zeros(1, 3, 16, 16), torch.tensor([10]), r"labels must be in \[0, 10\)"),
        (torch.zeros(1, 3, 16, 16), torch.tensor([-1]), r"labels must be in \[0, 10\)"),
        (torch.zeros(1, 3, 16, 16), torch.tensor([1.0]), "1-D integer tensor, got torch.float32"),
        (torch.zeros(1, 3, 16, 16), [1], "1-D integer tensor, got list"),
    ],
)
def test_bad_training_input_is_a_clear_error(images, labels, message):
    model = build_reference_model("tiny_ar")
    with pytest.raises(ValueError, match=message):
        model(images, labels)


def test_bits_per_dim_is_eval_loss_over_ln2():
    model = build_reference_model("tiny_mar").train()
    images = normalised_images(2, 16)
    bpd = bits_per_dim(model, images, num_passes=3, generator=torch.Generator().manual_seed(0))
    assert model.training  # restored
    model.eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        losses = [float(model(images, torch.zeros(2, dtype=torch.long), generator=generator)) for _ in range(3)]
    assert bpd == pytest.approx(sum(losses) / 3 / math.log(2))
    assert 7.0 < bpd < 9.0  # an untrained 256-way model is near log2(256) = 8 bits
    with pytest.raises(ValueError, match="num_passes"):
        bits_per_dim(model, images, num_passes=0)


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar", "tiny_mar4_gp"])
def test_fused_operators_in_training_give_the_same_loss_and_gradients(name):
    eager = build_reference_model(name).train()
    fused = build_reference_model(name).train().set_use_fused_ops(True)
    images, labels = normalised_images(2, 16, seed=3), torch.tensor([1, 8])
    losses = []
    for model in (eager, fused):
        torch.manual_seed(0)  # the AR blocks' dropout draws from the global generator
        loss = model(images, labels, generator=torch.Generator().manual_seed(5))
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (key, a), b in zip(eager.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=key)
