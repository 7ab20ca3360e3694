"""Parameter counts and multiply-adds against the paper (Table 1 and the cost figures)."""

from __future__ import annotations

import pytest
import torch

from lightning_tsf.commands.flops import main
from lightning_tsf.models import create_model
from lightning_tsf.models.flops import PAPER_GMACS, PAPER_PARAMS_M, count_flops, count_params


@pytest.mark.parametrize("scheme, paper", list(PAPER_PARAMS_M.items()))
def test_vit_base_params_within_0_3_percent_of_table_1(scheme, paper):
    with torch.device("meta"):
        model = create_model("timesformer", attention_type=scheme)
    assert abs(count_params(model) / 1e6 - paper) / paper <= 0.003


@pytest.mark.parametrize("variant, scheme", list(PAPER_GMACS))
def test_multiply_adds_within_2_percent_of_the_paper(variant, scheme):
    with torch.device("meta"):
        model = create_model(variant, attention_type=scheme)
    gmacs = count_flops(model) / 2e9
    paper = PAPER_GMACS[(variant, scheme)]
    assert abs(gmacs - paper) / paper <= 0.02, f"{gmacs:.1f} vs {paper}"


def test_flop_counter_counts_a_hand_computed_linear():
    """Sanity of the counting convention on a case done by hand: one Linear(4, 3) on 5 rows is
    5*4*3 = 60 multiply-adds, which FlopCounterMode reports as 120 FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.Linear(4, 3, bias=False)(torch.randn(5, 4))
    assert counter.get_total_flops() == 120


def test_table_command_prints_every_scheme(capsys):
    main(["--variants", "timesformer"])
    out = capsys.readouterr().out
    for scheme in PAPER_PARAMS_M:
        assert f"| timesformer | {scheme} |" in out
