"""What a trained model expects as input, recorded once: :class:`InputConfig`.

timm's ``pretrained_cfg`` for video. The record is resolved once, when training starts, from
the data configuration and the backbone; it is saved in every checkpoint
(``checkpoint["input_config"]``) and read back as saved by ``tsf test``/``predict``, the file
commands, :class:`Predictor`, ``tsf export`` and the picture callbacks, so one video and one
checkpoint give one answer on every path. Zoo entries carry the official record
(:func:`official_input_config`).

What it does not hold: how *this machine* reads files (the decoder backend, decoding at a lower
size), which :meth:`InputConfig.view_spec` takes as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from lightning_tsf.data.clips import ClipSpec, ViewSpec
from lightning_tsf.data.transforms import DEFAULT_MEAN, DEFAULT_STD

# Evaluation options that callers may change at test/prediction time ("as the checkpoint says"
# when not given); the others describe the model and change only with a warning.
VIEW_OPTIONS = ("num_spatial_crops", "num_temporal_views", "test_short_side")


@dataclass(frozen=True)
class InputConfig(ClipSpec):
    """Frames, sampling, crops, normalisation and classes a model was trained and tested with.

    The clip fields and their checks are :class:`~.clips.ClipSpec`'s (open ones take
    :data:`~.clips.OPEN_DEFAULTS`: dense, 3 crops, 1 clip, test short side = crop size).
    ``test_short_side`` is the short side an evaluation clip is resized to before its crops;
    ``one_crop_short_side`` is the one to use when a caller asks for a single centre crop of a
    model recorded with three (the official protocol: Kinetics 1 crop at ``train_scale[0]``,
    256; 3 crops at the crop size, 224; SSv2 224 for both).
    """

    one_crop_short_side: int = 256
    class_names: tuple[str, ...] = ()
    scheme: str | None = None  # the backbone's attention_type
    preset: str | None = None  # presets.PRESETS name of the backbone's sizes, when one

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as err:
            raise ValueError(f"input_config.{err}") from None
        self._close()
        if int(self.one_crop_short_side) < 1:
            raise ValueError(f"input_config.one_crop_short_side must be positive, got "
                             f"{self.one_crop_short_side}")  # fmt: skip
        object.__setattr__(self, "class_names", tuple(str(x) for x in self.class_names))

    # ------------------------------------------------------------------ derived
    def view_spec(self, backend: str = "auto", decode_short_side: int | None = None) -> ViewSpec:
        """The :class:`ViewSpec` that cuts these views, read with ``backend``."""
        clip = {f.name: getattr(self, f.name) for f in fields(ClipSpec)}
        return ViewSpec(**clip, backend=backend, decode_short_side=decode_short_side)

    def with_views(
        self,
        num_spatial_crops: int | None = None,
        num_temporal_views: int | None = None,
        test_short_side: int | None = None,
    ) -> InputConfig:
        """The record with other evaluation views; None keeps the recorded value. Going from
        3 crops to 1 takes ``one_crop_short_side`` (and back, the crop size), as the official
        protocol does, unless ``test_short_side`` is given."""
        crops = self.num_spatial_crops if num_spatial_crops is None else int(num_spatial_crops)
        side = test_short_side
        if side is None:
            side = self.test_short_side
            if crops != self.num_spatial_crops:
                side = self.one_crop_short_side if crops == 1 else self.crop_size
        temporal = self.num_temporal_views if num_temporal_views is None else num_temporal_views
        return replace(self, num_spatial_crops=crops, num_temporal_views=int(temporal),
                       test_short_side=int(side))  # fmt: skip

    def describe(self) -> str:
        """One line: ``1 clip x 3 crops of 224 after short side 224; dense 8x32``."""
        clips = "clip" if self.num_temporal_views == 1 else "clips"
        crops = "crop" if self.num_spatial_crops == 1 else "crops"
        rate = f"x{self.sampling_rate}" if self.sampler != "segment" else " segments"
        return (
            f"{self.num_temporal_views} {clips} x {self.num_spatial_crops} {crops} of "
            f"{self.crop_size} after short side {self.test_short_side}; "
            f"{self.sampler} {self.num_frames}{rate}"
        )

    def differences(self, other: InputConfig) -> list[str]:
        """``name: ours -> other`` for each field that differs (class names by count)."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b and f.name == "class_names":
                out.append(f"class_names: {len(a)} names -> {len(b)} names")
            elif a != b:
                out.append(f"{f.name}: {a} -> {b}")
        return out

    # ------------------------------------------------------------------ saved form
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples): stored in checkpoints and exported files."""
        out = asdict(self)
        for name in ("mean", "std", "class_names"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "input_config") -> InputConfig:
        """The record saved by :meth:`to_dict`; an unknown key or a bad value is a
        ``ValueError`` naming ``where``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**dict(record))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None


def resolve_input_config(
    format: str,
    *,
    sampler: str | None = None,
    num_frames: int = 8,
    sampling_rate: int = 32,
    crop_size: int = 224,
    train_scale: Sequence[int] = (256, 320),
    test_short_side: int | None = None,
    num_spatial_crops: int | None = None,
    num_temporal_views: int | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    class_names: Sequence[str] = (),
    scheme: str | None = None,
    preset: str | None = None,
) -> InputConfig:
    """The one place where a data configuration becomes an :class:`InputConfig`, with the
    official defaults for what it leaves out: sampler ``segment`` for SSv2, ``dense`` else;
    1 clip x 3 crops; test short side = the crop size with 3 crops and for SSv2, and
    ``train_scale[0]`` for a Kinetics-style 1-crop test."""
    ssv2 = format == "ssv2"
    one_crop = int(crop_size if ssv2 else train_scale[0])
    crops = 3 if num_spatial_crops is None else int(num_spatial_crops)
    side = test_short_side
    if side is None:
        side = one_crop if crops == 1 else crop_size
    return InputConfig(
        sampler=sampler or ("segment" if ssv2 else "dense"),
        num_frames=num_frames,
        sampling_rate=sampling_rate,
        crop_size=crop_size,
        test_short_side=int(side),
        one_crop_short_side=int(test_short_side or one_crop),
        num_spatial_crops=crops,
        num_temporal_views=1 if num_temporal_views is None else int(num_temporal_views),
        mean=tuple(mean),
        std=tuple(std),
        class_names=tuple(class_names),
        scheme=scheme,
        preset=preset,
    )


def official_input_config(
    dataset: str,
    num_frames: int,
    crop_size: int,
    class_names: Sequence[str] = (),
    scheme: str = "divided_space_time",
    preset: str | None = None,
) -> InputConfig:
    """The official test record of a released checkpoint (PAPER.md): Kinetics-style dense
    ``num_frames`` x (8: 32, 16: 16, 96: 4) clips from frame 0, 3 crops at short side
    ``crop_size`` (1 crop at the jitter minimum, 256 or 448 for HR); SSv2 segments, 3 crops at
    short side ``crop_size``; mean 0.45, std 0.225."""
    rates = {8: 32, 16: 16, 96: 4}
    ssv2 = dataset.lower().startswith("ssv2")
    return resolve_input_config(
        "ssv2" if ssv2 else "kinetics",
        num_frames=num_frames,
        sampling_rate=rates.get(num_frames, max(1, 256 // num_frames)),
        crop_size=crop_size,
        train_scale=(256 if crop_size == 224 else crop_size, 320),  # TRAIN_JITTER_SCALES[0]
        class_names=class_names,
        scheme=scheme,
        preset=preset,
    )
