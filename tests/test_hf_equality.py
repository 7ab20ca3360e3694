"""Numerical equality with HF transformers' TimeSformer (an independent implementation).

HF's model is built from a random config, its weights converted into ours by key renaming
alone, and both run in fp32. ``time_embed`` and ``temporal_fc`` are randomised first: at their
zero init they would hide a broken temporal path.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TimesformerConfig, TimesformerForVideoClassification

from lightning_tsf.models import TimeSformer, load_checkpoint

B, T, S, P, D, DEPTH, HEADS, CLASSES = 2, 4, 32, 8, 48, 3, 4, 7


def hf_model(attention_type: str) -> TimesformerForVideoClassification:
    torch.manual_seed(0)
    config = TimesformerConfig(
        image_size=S,
        patch_size=P,
        num_frames=T,
        hidden_size=D,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=4 * D,
        num_labels=CLASSES,
        attention_type=attention_type,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0,  # HF types it as int
    )
    model = TimesformerForVideoClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                "time_embeddings" in name
                or "temporal_dense" in name
                or name.endswith(("cls_token", "position_embeddings"))
            ):
                p.normal_(0, 0.3)
    return model


def ours_from(hf: TimesformerForVideoClassification, attention_type: str) -> TimeSformer:
    model = TimeSformer(
        img_size=S,
        patch_size=P,
        num_frames=T,
        num_classes=CLASSES,
        embed_dim=D,
        depth=DEPTH,
        num_heads=HEADS,
        attention_type=attention_type,
        drop_path_rate=0.0,
    ).eval()
    report = load_checkpoint(model, hf.state_dict())
    assert report.kind == "hf" and not report.missing and not report.unexpected
    return model


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time"])
def test_logits_equal_hf(attention_type):
    hf = hf_model(attention_type)
    ours = ours_from(hf, attention_type)
    x = torch.randn(B, 3, T, S, S)
    with torch.no_grad():
        ref = hf(pixel_values=x.transpose(1, 2)).logits  # HF layout (B, T, C, H, W)
        out = ours(x)
        feat_ref = hf.timesformer(pixel_values=x.transpose(1, 2)).last_hidden_state[:, 0]
        feat = ours.forward_features(x)
    assert (out - ref).abs().max() <= 1e-5
    assert (feat - feat_ref).abs().max() <= 1e-5


def test_space_only_features_equal_hf():
    """HF's space-only model keeps one sequence per frame (B*T, 1+N, D) and never averages;
    the official model averages the frames' tokens before the final norm. So compare the
    per-frame tokens, then our feature against the norm of HF's frame-averaged tokens."""
    hf = hf_model("space_only")
    ours = ours_from(hf, "space_only")
    x = torch.randn(B, 3, T, S, S)
    with torch.no_grad():
        hidden = hf.timesformer(pixel_values=x.transpose(1, 2), output_hidden_states=True)
        per_frame = hidden.hidden_states[-1]  # (B*T, 1+N, D), before the final norm
        tokens, _ = ours.forward_tokens(x)  # (B, 1+N, D), frames averaged
        ref_tokens = per_frame.reshape(B, T, -1, D).mean(1)
        ref_feature = hf.timesformer.layernorm(ref_tokens)[:, 0]
        ref_logits = hf.classifier(ref_feature)
        assert (tokens - ref_tokens).abs().max() <= 1e-5
        assert (ours.forward_features(x) - ref_feature).abs().max() <= 1e-5
        assert (ours(x) - ref_logits).abs().max() <= 1e-5


def test_hf_state_dict_of_bare_model_loads_too():
    hf = hf_model("divided_space_time")
    ours = TimeSformer(
        img_size=S,
        patch_size=P,
        num_frames=T,
        num_classes=0,
        embed_dim=D,
        depth=DEPTH,
        num_heads=HEADS,
        drop_path_rate=0.0,
    ).eval()
    load_checkpoint(ours, hf.timesformer.state_dict())  # TimesformerModel: no "timesformer."
    x = torch.randn(1, 3, T, S, S)
    with torch.no_grad():
        ref = hf.timesformer(pixel_values=x.transpose(1, 2)).last_hidden_state[:, 0]
        assert (ours(x) - ref).abs().max() <= 1e-5
