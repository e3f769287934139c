"""MC-Loss against hand-computed tiny cases (docs/METHODS.md#mc-loss)."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.losses.mcloss import MCLoss, ccmp, class_concentration, cwa_mask, group_sizes, mc_loss_terms


def test_group_sizes_uneven_smaller_first():
    sizes = group_sizes(2048, 200)
    assert sizes[:152] == [10] * 152 and sizes[152:] == [11] * 48 and sum(sizes) == 2048
    with pytest.raises(ConfigError):
        group_sizes(3, 4)


def test_uniform_groups_by_hand():
    # c = 2 classes, xi = 2, HW = 2 positions. Channels 0,1 -> class 0; 2,3 -> class 1.
    f = torch.tensor([[[1.0, 3.0], [2.0, 0.0], [0.0, 1.0], [4.0, 2.0]]], dtype=torch.float64).view(1, 4, 1, 2)
    y = torch.tensor([1])
    t = mc_loss_terms(f, y, 2)
    # CCMP: class 0 = max([1,3],[2,0]) = [2,3] -> mean 2.5; class 1 = max([0,1],[4,2]) = [4,2] -> mean 3.0
    logits = torch.tensor([[2.5, 3.0]], dtype=torch.float64)
    assert t.dis.item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-12)
    # softmax per channel over 2 positions, then max within group, summed over positions
    def sm(a, b):
        e = [math.exp(a), math.exp(b)]
        return [e[0] / sum(e), e[1] / sum(e)]
    s = [sm(1, 3), sm(2, 0), sm(0, 1), sm(4, 2)]
    h0 = max(s[0][0], s[1][0]) + max(s[0][1], s[1][1])
    h1 = max(s[2][0], s[3][0]) + max(s[2][1], s[3][1])
    assert t.h[0].tolist() == pytest.approx([h0, h1], abs=1e-12)
    assert t.div.item() == pytest.approx(1 - (h0 / 2 + h1 / 2) / 2, abs=1e-12)
    assert t.dis.dtype == torch.float64


def test_uneven_groups_by_hand():
    # groups [1, 2]: channel 0 -> class 0, channels 1,2 -> class 1; HW = 1 so softmax = 1 everywhere
    f = torch.tensor([[5.0, 1.0, 7.0]], dtype=torch.float64).view(1, 3, 1, 1)
    t = mc_loss_terms(f, torch.tensor([0]), [1, 2])
    logits = torch.tensor([[5.0, 7.0]], dtype=torch.float64)
    assert t.dis.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0])).item(), abs=1e-12)
    assert t.h[0].tolist() == pytest.approx([1.0, 1.0])
    assert t.div.item() == pytest.approx(1 - (1 / 1 + 1 / 2) / 2)


def test_explicit_mask_drops_the_max_channel():
    f = torch.tensor([[9.0, 1.0, 2.0, 3.0]], dtype=torch.float64).view(1, 4, 1, 1)
    y = torch.tensor([0])
    no_mask = mc_loss_terms(f, y, 2)
    masked = mc_loss_terms(f, y, 2, mask=torch.tensor([0.0, 1.0, 1.0, 1.0]))
    # without mask: logits [9, 3]; with channel 0 dropped: [1, 3]
    assert no_mask.dis.item() == pytest.approx(F.cross_entropy(torch.tensor([[9.0, 3.0]]), y).item(), abs=1e-6)
    assert masked.dis.item() == pytest.approx(F.cross_entropy(torch.tensor([[1.0, 3.0]]), y).item(), abs=1e-6)
    # the diversity term ignores the mask
    assert masked.div.item() == pytest.approx(no_mask.div.item())


def test_per_sample_mask_by_hand():
    # HW = 1, groups of 2: a class's logit is the max of its unmasked channels (masked ones count as 0)
    f = torch.tensor([[9.0, 1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 5.0]], dtype=torch.float64).view(2, 4, 1, 1)
    y = torch.tensor([0, 1])
    m = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]])
    # sample 0 keeps channels 0, 2: logits [9, 2], CE = log(1 + e^-7); sample 1 keeps 1, 3: logits [6, 5],
    # CE = log(1 + e^1); L_dis is their mean
    want = (math.log1p(math.exp(-7.0)) + math.log1p(math.exp(1.0))) / 2
    assert mc_loss_terms(f, y, 2, mask=m).dis.item() == pytest.approx(want, abs=1e-12)
    # the masks swapped: sample 0 keeps 1, 3: [1, 3], CE = log(1 + e^2); sample 1 keeps 0, 2: [4, 8], log(1 + e^-4)
    swapped = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-4.0))) / 2
    assert mc_loss_terms(f, y, 2, mask=m.flip(0)).dis.item() == pytest.approx(swapped, abs=1e-12)


def test_ccmp_gradient_goes_to_one_channel_on_ties():
    f = torch.ones(1, 2, 2, 2, requires_grad=True)  # two identical channels of one group: all ties
    ccmp(f, 2).sum().backward()
    g = f.grad[0].flatten(1)  # (2 channels, 4 positions)
    assert torch.all((g != 0).sum(0) == 1), "each position's gradient must go to exactly one channel"
    assert g.sum().item() == pytest.approx(4.0)


def test_h_is_one_for_identical_channels_and_xi_for_disjoint_peaks():
    xi, hw = 3, 9
    same = torch.rand(1, 1, 3, 3, dtype=torch.float64).repeat(1, xi, 1, 1)
    assert mc_loss_terms(same, torch.tensor([0]), xi).h.item() == pytest.approx(1.0, abs=1e-12)
    disjoint = torch.zeros(1, xi, hw, dtype=torch.float64)
    for j in range(xi):
        disjoint[0, j, j * 3] = 60.0  # exp(-60) ~ 1e-26: softmax is one-hot
    t = mc_loss_terms(disjoint.view(1, xi, 3, 3), torch.tensor([0]), xi)
    assert t.h.item() == pytest.approx(float(xi), abs=1e-9)
    assert t.div.item() == pytest.approx(0.0, abs=1e-9)


def test_cwa_mask_keeps_ceil_half_per_group():
    m = cwa_mask([3, 3, 4, 5], generator=torch.Generator().manual_seed(0))
    assert m.shape == (15,)
    assert [int(m[a:b].sum()) for a, b in ((0, 3), (3, 6), (6, 10), (10, 15))] == [2, 2, 2, 3]
    per = cwa_mask(3, n_channels=9, batch=4)
    assert per.shape == (4, 9) and torch.all(per.view(4, 3, 3).sum(2) == 2)
    with pytest.raises(ConfigError):
        cwa_mask(3)


def test_mcloss_total_matches_paper_form():
    torch.manual_seed(0)
    f = torch.rand(2, 6, 4, 4, dtype=torch.float64)
    logits = torch.randn(2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1])
    mask = torch.tensor([1.0, 1, 0, 0, 1, 1])
    loss = MCLoss(3, mu=0.5, lam=10.0)
    total, parts = loss(f, logits, y, mask=mask)
    t = mc_loss_terms(f, y, 3, mask)
    paper = F.cross_entropy(logits, y) + 0.5 * (t.dis - 10.0 * t.h.mean())
    # the code form differs from the paper form by the constant mu*lam*xi
    assert (total - paper).item() == pytest.approx(0.5 * 10.0 * 3, abs=1e-9)
    assert set(parts) == {"ce", "dis", "div", "regions"}


def test_class_concentration_by_hand():
    # groups [2, 1] (uneven): class 0 owns channels 0 and 1, class 1 owns channel 2; maps of 1 x 2 cells
    f = torch.tensor([[[[1.0, 1.0]], [[0.0, 3.0]], [[5.0, 0.0]]],     # sample 0, class 0
                      [[[2.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]]],    # sample 1, class 1
                     dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1])
    # sample 0, channel 0: [1, 1] / 2 = [0.5, 0.5], centroid column 0.5; each cell is 0.5 columns away, in map
    # widths (w = 2) 0.25, squared 0.0625: spread 0.5 * 0.0625 + 0.5 * 0.0625 = 0.0625.
    # sample 0, channel 1: [0, 1], one cell: 0. Channel 2 is class 1's: not counted for sample 0.
    # sample 1 (class 1, one channel): channel 2 = [1, 1] -> 0.0625; channels 0 and 1 are class 0's: not counted.
    # mean over the 3 counted channels and the h * w = 2 cells: (0.0625 + 0 + 0.0625) / (3 * 2) = 0.0208333...
    c = class_concentration(f, y, [2, 1])
    assert c.item() == pytest.approx(0.125 / 6, abs=1e-12)
    c.backward()
    assert f.grad[0, 2].abs().sum() == 0 and f.grad[1, :2].abs().sum() == 0  # other classes' channels untouched
    # a channel that is zero everywhere counts 0 (no NaN), and a one-cell channel 0
    zero = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    zero[0, 1, 1, 0] = 4.0
    assert class_concentration(zero, torch.tensor([0]), 3).item() == 0.0
    # the term reaches the total only with a weight, and is logged then
    logits = torch.zeros(2, 2, dtype=torch.float64)
    mask = torch.ones(3, dtype=torch.float64)
    plain, parts = MCLoss([2, 1], mu=0.5)(f.detach(), logits, y, mask=mask)
    with_conc, parts_c = MCLoss([2, 1], mu=0.5, conc=1000.0)(f.detach(), logits, y, mask=mask)
    assert "conc" not in parts and parts_c["conc"].item() == pytest.approx(0.125 / 6, abs=1e-12)
    assert (with_conc - plain).item() == pytest.approx(1000.0 * 0.125 / 6, abs=1e-9)
