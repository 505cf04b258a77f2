"""max_pool='relu-tree': max-pooling rewritten as grouped conv + ReLU layers (max(a, b) = relu(a - b)
+ relu(b) for b >= 0). The ANN must be unchanged, what cannot be rewritten exactly is one clear
error, and sdnn (ReLU neurons) then pools exactly in a standard NetX file that Lava runs bit-exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.fixed.quantize import quantize
from loihi_conv.frontend import ir
from loihi_conv.frontend.ops import forward
from loihi_conv.frontend.pools import _tree, max_pools_as_relu_trees
from loihi_conv.frontend.prepare import prepare

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:Lazy modules")]


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9])
def test_the_tree_is_the_max(n, signed):
    v = torch.rand(200, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    v[:20] = v[:20].round()  # ties
    v = v - 0.5 if signed else v
    mats, h = _tree(n, signed), v.T
    for m in mats[:-1]:
        h = torch.relu(m @ h)
    torch.testing.assert_close((mats[-1] @ h)[0], v.max(1).values)
    assert len(mats) - 1 == (n - 1).bit_length()  # ceil(log2 n) ReLU levels


def _net(pool: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), pool, nn.Conv2d(4, 5, 3), nn.ReLU(),
                         nn.Flatten(), nn.LazyLinear(3)).eval()


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d((2, 3), (1, 2)),
                                  nn.MaxPool2d(3, 3, ceil_mode=True)])
def test_the_rewrite_leaves_the_ann_unchanged(pool):
    net = _net(pool)
    x = torch.rand(6, 2, 12, 12, generator=torch.Generator().manual_seed(1))
    net(x)
    g = prepare(net, (2, 12, 12))
    tree = max_pools_as_relu_trees(g)
    assert not tree.of_type(ir.MaxPool2d) and len(tree.of_type(ir.ReLU)) > len(g.of_type(ir.ReLU))
    torch.testing.assert_close(forward(tree, x), forward(g, x), atol=1e-5, rtol=1e-5)


def test_a_pool_of_signed_values_is_exact_and_padding_them_is_one_clear_error():
    torch.manual_seed(0)
    before_relu = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(3, 2), nn.ReLU(), nn.Flatten(),
                                nn.Linear(2 * 3 * 3, 2)).eval()
    x = torch.rand(5, 1, 9, 9, generator=torch.Generator().manual_seed(2)) - 0.5
    g = prepare(before_relu, (1, 9, 9))
    torch.testing.assert_close(forward(max_pools_as_relu_trees(g), x), forward(g, x), atol=1e-5, rtol=1e-5)
    padded = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1), nn.ReLU(), nn.Flatten(),
                           nn.Linear(2 * 4 * 4, 2))
    with pytest.raises(LoihiConvError, match="can be negative") as err:
        max_pools_as_relu_trees(prepare(padded.eval(), (1, 8, 8)))
    assert "relu-tree" in str(err.value) and err.value.fix
    partial = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
                            nn.Linear(2 * 4 * 4, 2))
    with pytest.raises(LoihiConvError, match="ceil_mode"):
        max_pools_as_relu_trees(prepare(partial.eval(), (1, 9, 9)))


def _pool_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 5)).eval()


def test_sdnn_pools_exactly_with_the_tree_and_not_with_the_average():
    """The emulated sdnn network (it settles on the ANN up to rounding) against the ANN's logits:
    the tree is the max-pool, the average replacement is another network."""
    from loihi_conv.emulate import emulate
    from loihi_conv.fixed.decode import encode, scores, steps_for

    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    test = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    ann = _pool_net()(test).detach().double()
    errs = {}
    for scheme in ("relu-tree", "avg"):
        qnet = quantize(convert(_pool_net(), x, Recipe(max_pool=scheme)), "sdnn", 8, calib=x)
        run = emulate(qnet, encode(qnet, test), steps_for(qnet, 8))
        out = torch.as_tensor(scores(qnet, run.output, run.readout), dtype=torch.float64) / qnet.output_scale
        errs[scheme] = float((out - ann).norm() / ann.norm())
    assert errs["relu-tree"] < 0.05 < errs["avg"], errs


def test_sdnn_search_fixes_the_tree():
    from loihi_conv.fixed.quantize import TARGETS

    assert TARGETS["sdnn"].recipe_fixed["max_pool"] == "relu-tree"


@pytest.mark.lava
def test_a_relu_tree_sdnn_file_is_standard_netx_and_bit_exact_on_lava(tmp_path):
    from loihi_conv.app.verify import verify
    from netx_export.reader import load, read_info
    from netx_export.runner import LavaRunner
    from netx_export.writer import save

    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    qnet = quantize(convert(_pool_net(), x, Recipe(max_pool="relu-tree")), "sdnn", 8, calib=x)
    path = save(qnet, tmp_path / "tree.net")
    assert read_info(path)["format"] == 0
    with LavaRunner(path) as runner:
        ver = verify(load(path), x[:2], 8, runner=runner)
        assert runner._c.net.engine == "netx"
    assert ver.total_compared > 1000 and ver.total_mismatches == 0
