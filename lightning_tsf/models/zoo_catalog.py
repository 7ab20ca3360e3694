"""The zoo's catalogue: the official TimeSformer checkpoints and the ImageNet-21K ViT-B/16 the
paper initialises from, each with the model it fits and its official test record
(:mod:`.zoo` fetches and verifies them)."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_tsf.data.inputs import InputConfig, official_input_config
from lightning_tsf.models.presets import PRESETS

PREFIX = "zoo:"
_DROPBOX = "https://www.dropbox.com/s/{id}/{file}?dl=1"


class ZooError(RuntimeError):
    """A download that cannot be completed; the message names the URL and the manual step."""


class NotInSource(ZooError):
    """The source answered, but has no such file (HTTP 404, not in the mirror folder)."""


@dataclass(frozen=True)
class ZooEntry:
    """A downloadable checkpoint and the model it fits."""

    name: str
    file: str
    url: str
    dataset: str
    preset: str  # presets.PRESETS name: sizes of the matching model
    num_frames: int
    num_classes: int | None  # None: as the file's head says
    kind: str  # load_checkpoint kind: "official" or "timm"
    scheme: str = "divided_space_time"
    # (top-1, top-5) reported by the official README (3 views x 1 clip); top-5 may be None
    accuracy: tuple[float, float | None] | None = None
    hf: str | None = None  # the HF hub copy, converted names (load with kind="hf")
    sha256: str | None = None  # of the file, where known (a wrong or cut file never matches)

    @property
    def frames_x_size(self) -> str:
        return f"{self.num_frames}x{PRESETS[self.preset]['img_size']}"

    @property
    def input_config(self) -> InputConfig:
        """The official test record of this checkpoint (Kinetics: dense clips from frame 0,
        3 crops at short side = crop; SSv2: segments, 3 crops)."""
        return official_input_config(self.dataset, self.num_frames,
                                     PRESETS[self.preset]["img_size"], scheme=self.scheme,
                                     preset=self.preset)  # fmt: skip


def _official(name: str, file_id: str, file: str, dataset: str, preset: str, frames: int,
              classes: int | None, top1: float, top5: float | None,
              hf: str | None = None) -> ZooEntry:  # fmt: skip
    return ZooEntry(name, file, _DROPBOX.format(id=file_id, file=file), dataset, preset, frames,
                    classes, "official", accuracy=(top1, top5), hf=hf)  # fmt: skip


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        _official("timesformer_k400", "g5t24we9gl5yk88", "TimeSformer_divST_8x32_224_K400.pyth",
                  "K400", "timesformer", 8, 400, 77.9, 93.2,
                  "facebook/timesformer-base-finetuned-k400"),
        _official("timesformer_hr_k400", "6f0x172lpqy3oxt",
                  "TimeSformer_divST_16x16_448_K400.pyth", "K400", "timesformer_hr", 16, 400,
                  79.6, 94.0, "facebook/timesformer-hr-finetuned-k400"),
        _official("timesformer_l_k400", "r1iuxahif3sgimo", "TimeSformer_divST_96x4_224_K400.pyth",
                  "K400", "timesformer_l", 96, 400, 80.6, 94.7),
        _official("timesformer_k600", "4h2qt41m2z3aqrb", "TimeSformer_divST_8x32_224_K600.pyth",
                  "K600", "timesformer", 8, 600, 79.1, 94.4,
                  "facebook/timesformer-base-finetuned-k600"),
        _official("timesformer_hr_k600", "ft1e92g2vhvxecv",
                  "TimeSformer_divST_16x16_448_K600.pyth", "K600", "timesformer_hr", 16, 600,
                  81.8, 95.8, "facebook/timesformer-hr-finetuned-k600"),
        _official("timesformer_l_k600", "857rx6xeclxfhdg", "TimeSformer_divST_96x4_224_K600.pyth",
                  "K600", "timesformer_l", 96, 600, 82.2, 95.6),
        _official("timesformer_ssv2", "tybhuml57y24wpm", "TimeSformer_divST_8_224_SSv2.pyth",
                  "SSv2", "timesformer", 8, 174, 59.1, 85.6,
                  "facebook/timesformer-base-finetuned-ssv2"),
        _official("timesformer_hr_ssv2", "9t68uzk8w2fpfnv", "TimeSformer_divST_16_448_SSv2.pyth",
                  "SSv2", "timesformer_hr", 16, 174, 61.8, 86.9,
                  "facebook/timesformer-hr-finetuned-ssv2"),
        _official("timesformer_l_ssv2", "3f1rm2al8mhprwa", "TimeSformer_divST_64_224_SSv2.pyth",
                  "SSv2", "timesformer_l", 64, 174, 62.0, 87.5),
        _official("timesformer_howto100m", "9v8hcm88b9tc6ff",
                  "TimeSformer_divST_8x32_224_HowTo100M.pyth", "HowTo100M", "timesformer", 8,
                  None, 56.8, None),
        ZooEntry("vit_base_in21k", "jx_vit_base_p16_224-80ecf9dd.pth",
                 "https://github.com/rwightman/pytorch-image-models/releases/download/"
                 "v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth", "ImageNet-21K (+1K)",
                 "timesformer", 8, None, "timm"),
    ]
}  # fmt: skip


def entry(name: str) -> ZooEntry:
    """The zoo entry ``name``, or a ``KeyError`` listing the known names."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo checkpoint {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name]
