"""torch.fx tracing into the float IR: spellings, residual nets, and the errors users see."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.prepare import prepare
from loihi_conv.frontend.tracing import trace


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running stats and affine params, eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 4 - 2)
            m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.rand(c, generator=g) * 2 - 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


def _max_diff(model: nn.Module, input_shape: tuple, batch: int = 4, seed: int = 1) -> float:
    graph = prepare(model, input_shape)
    x = torch.randn((batch,) + input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (ops.forward(graph, x) - model.eval()(x)).abs().max().item()


def _count(graph: ir.Graph, kind: type) -> int:
    return len(graph.of_type(kind))


def _line_of(cls: type, text: str) -> str:
    """'test_trace.py:<line>' of the line of ``cls.forward`` containing ``text``."""
    src, start = inspect.getsourcelines(cls.forward)
    (idx,) = [i for i, line in enumerate(src) if text in line]
    return f"test_trace.py:{start + idx}"


def _error(model: nn.Module, input_shape: tuple) -> str:
    with pytest.raises(LoihiConvError) as info:
        trace(model, input_shape)
    return str(info.value)


# --------------------------------------------------------------------------- spellings
class FunctionalRelus(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.c4 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = self.c3(x).relu()
        x = self.act(self.c4(x))
        return self.fc(torch.flatten(x, 1))


def test_functional_relu_spellings_trace_to_relu_nodes():
    model = FunctionalRelus()
    graph = trace(model, (2, 6, 6))
    assert _count(graph, ir.ReLU) == 4
    assert _max_diff(model, (2, 6, 6)) < 1e-5


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        y = F.relu(self.a(x)) + x
        z = torch.add(F.relu(self.b(y)), y)
        z = z.add(x)
        return self.out(z)


def test_residual_adds_trace_to_add_nodes():
    model = Residual()
    graph = trace(model, (8,))
    adds = graph.of_type(ir.Add)
    assert len(adds) == 3
    assert adds[0].inputs == ("relu", "x")
    assert _max_diff(model, (8,)) < 1e-5


FLATTENS = {
    "torch.flatten": lambda x: torch.flatten(x, 1),
    "Tensor.flatten": lambda x: x.flatten(1),
    "view(size(0))": lambda x: x.view(x.size(0), -1),
    "view(size()[0])": lambda x: x.view(x.size()[0], -1),
    "reshape(shape[0])": lambda x: x.reshape(x.shape[0], -1),
    "view(-1, n)": lambda x: x.view(-1, 4 * 3 * 3),
    "nn.Flatten": nn.Flatten(),
}


class Flattener(nn.Module):
    def __init__(self, flatten):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.flat = flatten
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(self.flat(F.relu(self.conv(x))))


@pytest.mark.parametrize("spelling", FLATTENS)
def test_flatten_spellings_trace_to_one_flatten(spelling):
    flat = FLATTENS[spelling]
    model = Flattener(flat if isinstance(flat, nn.Module) else _Lambda(flat))
    graph = trace(model, (1, 7, 7))
    assert _count(graph, ir.Flatten) == 1
    assert graph["fc"].inputs == (graph.of_type(ir.Flatten)[0].name,)
    assert _max_diff(model, (1, 7, 7)) < 1e-5


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class WithDropouts(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.d2 = nn.Dropout2d(0.5)
        self.same = nn.Identity()
        self.fc = nn.Linear(4 * 4 * 4, 6)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        x = self.same(self.d2(F.relu(self.c(x))))
        x = F.dropout(x.flatten(1), 0.5, self.training).contiguous()
        return self.fc2(self.drop(F.relu(self.fc(x))))


def test_dropout_and_identity_vanish_and_train_mode_is_restored():
    model = WithDropouts().train()
    graph = trace(model, (1, 6, 6))
    assert [type(n).__name__ for n in graph] == ["Input", "Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"]
    assert graph["flatten"].inputs == ("relu",)  # rewired past Dropout2d and Identity
    assert model.training and model.drop.training  # the user's model is left as it was
    assert _max_diff(model, (1, 6, 6)) < 1e-5


def test_ir_tensors_are_copies_of_the_model():
    model = WithDropouts()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = trace(model, (1, 6, 6))
    graph["c"].weight.add_(1.0)
    assert graph["c"].weight.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- networks
class Block(nn.Module):
    """conv-bn-relu-conv-bn + shortcut (identity or 1x1 conv+BN), then relu."""

    def __init__(self, ci, co, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.conv2 = nn.Conv2d(co, co, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.shortcut = (nn.Identity() if ci == co and stride == 1 else
                         nn.Sequential(nn.Conv2d(ci, co, 1, stride=stride, bias=False), nn.BatchNorm2d(co)))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out += self.shortcut(x)
        return F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.block1 = Block(8, 8, 1)   # identity shortcut
        self.block2 = Block(8, 16, 2)  # 1x1 conv + BN shortcut
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.block2(self.block1(self.stem(x))))
        return self.fc(x.view(x.size(0), -1))


def test_resnet_like_block_matches_model():
    model = _randomize_bn(TinyResNet(), seed=3)
    graph = trace(model, (3, 8, 8))
    assert _count(graph, ir.Add) == 2 and _count(graph, ir.BatchNorm) == 6
    assert graph["pool"].kernel_size == (4, 4)  # adaptive 4x4 -> 1 is a fixed average pool
    folded = prepare(model, (3, 8, 8))
    assert _count(folded, ir.BatchNorm) == 0
    assert folded.output == "fc" and folded["fc"].shape == (10,)
    assert _max_diff(model, (3, 8, 8)) < 1e-5


class TinyVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.BatchNorm1d(16),
                                        nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))

    def forward(self, x):
        x = F.max_pool2d(self.features(x), kernel_size=2, stride=2, padding=1)
        return self.classifier(F.avg_pool2d(x, 1))


def test_vgg_like_with_avg_and_max_pooling_matches_model():
    model = _randomize_bn(TinyVGG(), seed=5)
    graph = trace(model, (1, 12, 12))
    assert _count(graph, ir.AvgPool2d) == 2 and _count(graph, ir.MaxPool2d) == 2
    assert graph["max_pool2d"].padding == (1, 1)
    assert _max_diff(model, (1, 12, 12), batch=6) < 1e-5


def test_shapes_are_filled_in():
    graph = trace(TinyVGG(), (1, 12, 12))
    assert graph.input.shape == (1, 12, 12)
    assert graph["features_3"].shape == (6, 6, 6)
    assert graph["classifier_0"].shape == (8 * 2 * 2,)
    assert graph[graph.output].shape == (4,)


# --------------------------------------------------------------------------- errors
class OneBad(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid())
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.flatten(1))


def test_unsupported_layer_is_named_with_its_line():
    msg = _error(OneBad(), (1, 6, 6))
    assert "'features.1' (nn.Sigmoid)" in msg
    assert _line_of(OneBad, "self.features(x)") in msg
    assert "ReLU" in msg.split("fix:")[1]  # says what to use instead


class TwoBad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")  # only nearest is supported
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        x = self.up(self.conv(x))
        x = torch.tanh(x)
        return self.fc(x.flatten(1))


def test_all_unsupported_layers_are_reported_in_one_error():
    msg = _error(TwoBad(), (1, 6, 6))
    assert msg.startswith("unsupported layers:")
    assert "'up' (nn.Upsample: mode='bilinear'" in msg and _line_of(TwoBad, "self.up(") in msg
    assert "(torch.tanh)" in msg and _line_of(TwoBad, "torch.tanh") in msg


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return self.fc(-x)


def test_untraceable_model_points_at_the_line():
    msg = _error(Branchy(), (4,))
    assert _line_of(Branchy, "if x.sum() > 0") in msg
    assert "control flow" in msg


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5)
        self.fc = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.avg_pool2d(F.relu(self.conv(x)), 2), 1))


def test_wrong_channel_count_names_expected_and_given():
    msg = _error(SmallCNN(), (3, 28, 28))
    assert "expects input (1, H, W), given (3, 28, 28)" in msg


def test_wrong_spatial_size_names_the_linear_features():
    msg = _error(SmallCNN(), (1, 32, 32))
    assert f"expects {4 * 12 * 12} features but gets {4 * 14 * 14}" in msg


def test_wrong_mlp_input_names_in_features():
    msg = _error(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 32, 32))
    assert "expects input (784,)" in msg and "(1, 32, 32)" in msg


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_is_named(bad):
    model = SmallCNN()
    model.fc.weight.data[3, 7] = bad
    msg = _error(model, (1, 28, 28))
    assert "'fc.weight'" in msg and "conv" not in msg.split("fix:")[0]


class FinalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return F.relu(self.fc(x))


def test_final_relu_is_rejected():
    msg = _error(FinalReLU(), (4,))
    assert "ReLU" in msg and "logits" in msg


@pytest.mark.parametrize("head", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)])
def test_final_softmax_is_rejected(head):
    msg = _error(nn.Sequential(nn.Linear(4, 2), head), (4,))
    assert f"'1' (nn.{type(head).__name__})" in msg and "logits" in msg and "argmax" in msg


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.fc(x)
        return y, x


def test_tuple_output_is_rejected():
    assert "tuple of 2 values" in _error(TupleOut(), (4,))


class MisplacedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        x = self.bn(F.relu(self.conv(x)))  # BN after the ReLU: cannot be folded into conv
        return self.fc(x.flatten(1))


def test_bn_that_cannot_fold_becomes_an_affine_depthwise_conv():
    from loihi_conv.frontend.prepare import prepare

    model = MisplacedBN().eval()
    model.bn.running_mean.uniform_(-1, 1), model.bn.running_var.uniform_(0.5, 2), model.bn.weight.data.uniform_(0.5, 2)
    graph = prepare(model, (1, 6, 6))
    assert isinstance(graph["bn"], ir.Conv2d) and graph["bn"].groups == 4
    x = torch.randn(5, 1, 6, 6)
    assert (ops.forward(graph, x) - model(x)).abs().max().item() < 1e-5


def test_non_divisible_adaptive_pool_is_an_adaptive_pool_node():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(18, 2))
    graph = trace(model, (1, 9, 9))  # 7x7 -> 3x3 has no fixed kernel
    assert [n.output_size for n in graph.of_type(ir.AdaptiveAvgPool2d)] == [(3, 3)]
    assert _max_diff(model, (1, 9, 9)) < 1e-5


class InPlaceReuse(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        y = self.a(x)
        z = y.relu_()
        return self.b(y) + self.b(z)


def test_in_place_op_whose_input_is_reused_is_reported():
    msg = _error(InPlaceReuse(), (4,))
    assert "Tensor.relu_: in-place" in msg


@pytest.mark.parametrize("shape", [(28, 28), (), (1, 0, 28)])
def test_malformed_input_shape(shape):
    assert "input_shape" in _error(SmallCNN(), shape)
