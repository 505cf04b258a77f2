"""BatchNorm folding is exact, leaves its input alone, and refuses BN it cannot fold."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.fold_bn import fold_batchnorm
from loihi_conv.frontend.prepare import prepare
from loihi_conv.frontend.tracing import trace


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Running stats far from (0, 1) and gamma of both signs, then eval mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 3)
            m.running_var.copy_(torch.rand(c, generator=gen) * 5 + 0.05)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen))
            m.eps = float(torch.rand(1, generator=gen)) * 1e-3 + 1e-5
    return model.eval()


class ConvBN(nn.Module):
    def __init__(self, bias: bool, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, groups=groups, bias=bias)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 3 * 3, 5)
        self.bn3 = nn.BatchNorm1d(5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.fc(x.flatten(1)))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


CASES = {
    "conv+bias": (lambda: ConvBN(True, 1), (4, 7, 7)),
    "conv-nobias-grouped": (lambda: ConvBN(False, 4), (4, 7, 7)),
    "mlp": (_mlp, (12,)),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES)
def test_folded_graph_equals_model(case, seed):
    make, shape = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _randomize_bn(make(), gen)
    graph = prepare(model, shape)
    assert not graph.of_type(ir.BatchNorm)
    x = torch.randn((8,) + shape, generator=gen) * 2
    with torch.no_grad():
        expected = model(x)
    assert expected.abs().max() > 1.0  # the BN stats really change the output scale
    assert (ops.forward(graph, x) - expected).abs().max().item() < 1e-5


def test_fold_keeps_synapse_names_and_rewires_users():
    model = _randomize_bn(ConvBN(True, 1), torch.Generator().manual_seed(4))
    folded = prepare(model, (4, 7, 7))
    assert [n.name for n in folded] == ["x", "conv1", "relu", "conv2", "relu_1", "flatten", "fc"]
    assert folded["relu"].inputs == ("conv1",)
    assert folded.output == "fc" and folded["fc"].bias.dtype == torch.float32


def test_fold_does_not_change_its_input():
    model = _randomize_bn(ConvBN(False, 1), torch.Generator().manual_seed(5))
    traced = trace(model, (4, 7, 7))
    weight = traced["conv1"].weight.clone()
    folded = fold_batchnorm(traced)
    assert len(traced.of_type(ir.BatchNorm)) == 3 and traced["conv1"].bias is None
    assert torch.equal(traced["conv1"].weight, weight)
    assert not torch.equal(folded["conv1"].weight, weight)
    x = torch.randn(3, 4, 7, 7)
    assert (ops.forward(folded, x) - ops.forward(traced, x)).abs().max().item() < 1e-5


def _bn(name: str, src: str, c: int) -> ir.BatchNorm:
    return ir.BatchNorm(name, (src,), weight=torch.ones(c), bias=torch.zeros(c),
                        running_mean=torch.zeros(c), running_var=torch.ones(c))


@pytest.mark.parametrize("where", ["after a ReLU", "on a shared synapse"])
def test_bn_that_cannot_fold_becomes_an_affine_synapse(where):
    bn = ir.BatchNorm("bn", ("relu",) if where == "after a ReLU" else ("fc",), weight=torch.rand(2) + 0.5,
                      bias=torch.randn(2), running_mean=torch.randn(2), running_var=torch.rand(2) + 0.5)
    nodes = [ir.Input("x", (), shape=(3,)), ir.Linear("fc", ("x",), weight=torch.randn(2, 3)),
             ir.ReLU("relu", ("fc",)), bn, ir.Add("add", ("bn", "fc")),
             ir.Linear("out", ("add",), weight=torch.randn(1, 2))]
    graph = ops.infer_shapes(ir.Graph({n.name: n for n in nodes}, "out"))
    folded = fold_batchnorm(graph)
    assert isinstance(folded["bn"], ir.Linear) and not folded.of_type(ir.BatchNorm)
    x = torch.randn(7, 3)
    assert (ops.forward(folded, x) - ops.forward(graph, x)).abs().max().item() < 1e-5
