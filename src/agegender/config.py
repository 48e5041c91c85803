"""Configuration in one place: paths, age bands and the training configuration."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


def _project_root() -> Path:
    """The repository this package runs from: the checkout around ``src/agegender/`` (an editable install or
    ``PYTHONPATH=src``); for a copy installed by ``pip install .``, ``$AGEGENDER_HOME`` or else the working
    directory (where ``models/`` and ``data/`` are looked for)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "agegender").is_dir():
        return checkout
    return Path(os.environ.get("AGEGENDER_HOME") or Path.cwd()).resolve()


#: Repository root (``src/agegender/config.py`` -> three levels up in a checkout; see :func:`_project_root`).
PROJECT_ROOT = _project_root()
DATA_DIR = PROJECT_ROOT / "data"
SAMPLE_DIR = DATA_DIR / "sample"
MODELS_DIR = PROJECT_ROOT / "models"
FIGURES_DIR = PROJECT_ROOT / "figures"
RUNS_DIR = PROJECT_ROOT / "runs"

#: Default model used by ``agegender predict``, the notebooks and the app.
DEFAULT_MODEL_NAME = "agenet"

#: Age bands used in every per-band report: (label, lowest age, highest age) inclusive.
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-12", 0, 12),
    ("13-19", 13, 19),
    ("20-39", 20, 39),
    ("40-59", 40, 59),
    ("60+", 60, 200),
)
#: Decades of the bias-by-decade reports (UTKFace and labelled photos): (label, lowest age, highest age) inclusive.
AGE_DECADES: tuple[tuple[str, int, int], ...] = tuple(
    (f"{d}-{d + 9}", d, d + 9) for d in range(0, 70, 10)) + (("70+", 70, 200),)
RACES: dict[int, str] = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}
GENDERS: dict[int, str] = {0: "male", 1: "female"}
MAX_AGE = 116
#: Bytes in the MB of every size the project reports (SI megabytes).
MB = 1_000_000
#: What gives the gender logit of `agegender add-descriptor`'s face network: a logistic regression on its 128-D
#: descriptor, or MLP heads on the inner features its age heads read.
GENDER_HEADS: tuple[str, ...] = ("regression", "mlp")
#: Where training runs (agegender.training.distribution): one device, every device of this machine, or several
#: machines described by the TF_CONFIG environment variable.
DISTRIBUTIONS: tuple[str, ...] = ("none", "mirrored", "multi_worker")


def cache_dir() -> Path:
    """Where preprocessed image arrays are cached (``AGEGENDER_CACHE`` overrides)."""
    return Path(os.environ.get("AGEGENDER_CACHE", DATA_DIR / "cache"))


def chosen_data_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """The UTKFace folder the user chose: the explicit argument, ``$UTKFACE_DIR`` or a non-empty
    ``data/UTKFace/``, in that order; None when there is none."""
    if folder:
        return Path(folder)
    env = os.environ.get("UTKFACE_DIR")
    if env:
        return Path(env)
    local = DATA_DIR / "UTKFace"
    if local.is_dir() and any(local.iterdir()):
        return local
    return None


def resolve_data_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where the UTKFace images are: :func:`chosen_data_dir`, else the bundled sample ``data/sample/``
    (a few hundred crops, enough to run everything)."""
    return chosen_data_dir(folder) or SAMPLE_DIR


def project_path(path: str | os.PathLike) -> Path:
    """``path`` as given if absolute, else relative to the project root (recipes name files like ``data/...``)."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def default_model_path() -> Path:
    """The project's default model (``AGEGENDER_MODEL`` overrides)."""
    env = os.environ.get("AGEGENDER_MODEL")
    if env:
        return Path(env)
    return MODELS_DIR / f"{DEFAULT_MODEL_NAME}.keras"


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved in every model card."""

    model: str = "seed_cnn"  # a name registered in agegender.models.BUILDERS
    name: str | None = None  # output name under models/ (default: the model name)
    image_size: int = 128
    progressive_resizing: list[list[int]] = field(default_factory=list)  # [[size, epochs], ...] first, then image_size
    color_mode: str = "grayscale"  # "grayscale" or "rgb"
    resize: str = "antialias"  # see agegender.data.images.RESIZE_METHODS; recorded in the card for serving
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 1e-4  # used by adamw
    schedule: str = "constant"  # "constant" or "cosine"
    warmup_epochs: float = 0.0
    augment: bool = False
    augment_low_resolution: float = 0.0  # with augment: probability of a blurred, low-resolution copy per image
    low_resolution_keep: list[float] = field(default_factory=lambda: [0.2, 0.8])  # ... its side, as a share of the input's
    augment_erase: float = 0.0  # with augment: probability of one rectangle of noise per image (random erasing)
    augment_photo: float = 0.0  # with augment: probability of a re-captured look per image (pipeline.photo_capture)
    mixup_alpha: float = 0.0  # 0 = off; else training batches are mixup blends, shares drawn from Beta(alpha, alpha)
    seed: int = 42
    early_stopping_patience: int = 0  # 0 disables early stopping
    max_train_minutes: float = 0.0  # 0 = no budget; else stop before an epoch forecast to end past it
    budget_shortens_schedule: bool = True  # cosine + budget: a run forecast to overrun ends its decay early
    limit: int = 0  # use only N images of each split, spread over all ages (data.spread_subset; 0 = all); smoke tests
    age_loss_weight: float = 1.0
    gender_loss_weight: float = 1.0
    gender_label_smoothing: float = 0.0
    ema_momentum: float = 0.0  # 0 = off; else the final model is an exponential moving average of the weights
    age_sigma: float = 2.0  # width (years) of the soft age label of distribution heads, at age 0 ...
    age_sigma_per_year: float = 0.0  # ... growing by this much per year of age (0 = the same width at every age)
    age_mean_loss_weight: float = 0.1  # L1 on the distribution's expectation, relative to the KL term
    age_balance: float = 0.0  # weight each image by (share of its age band in train) ** -age_balance; 0 = off
    age_balance_bin_years: int = 0  # the groups of age_balance: 0 = the five report bands, N = N-year bins
    age_balance_gender: float | None = None  # the power of age_balance's weights in the gender loss; None = age_balance
    tta_flip: bool = False  # average predictions with the mirrored image (recorded in the card)
    tta_zoom: list[float] = field(default_factory=list)  # more test-time views: centre zooms (0.92 = 8 % closer)
    age_readout: str = "expectation"  # distribution heads: "expectation", "median", or "val" (the better on val)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher_descriptors: str | None = None  # descriptors to reproduce (agegender.training.teacher); None = no teacher
    descriptor_loss_weight: float = 1.0  # weight of the teacher's descriptor loss (standardised MSE)
    teacher_gender_weight: float = 0.0  # mix the teacher's out-of-fold P(female) into gender targets (0 = off)
    teacher_gender_min_age: int = 13  # ... only for faces this old or older (the descriptor is weak on children)
    train_on_val: bool = False  # fit on train + val: the final refit of a recipe already chosen on val (val then in-sample)
    exclude_faces: str | None = None  # training faces to leave out (agegender.data.cleaning); val/test keep all
    init_weights: str | None = None  # start from: a model name in models_dir (a previous stage) or a .keras/.weights.h5 path
    # stages after training (agegender.training.recipe): the face descriptor step, then the TFLite export for serving
    add_descriptor: bool = False  # add dlib's face network with gender and age heads (agegender add-descriptor)
    descriptor_augment: bool = False  # ... its heads fitted on augmented copies of the training faces
    detail_cap: int | None = None  # cap every input's detail at N px, in the graph (agegender cap-detail); None = off
    export: str | None = None  # "float16" or "none": write the TFLite export beside the final model; None = no export
    # where training runs (agegender.training.distribution); batch_size stays the global batch, split over replicas
    distribution: str = "none"  # "none" (one device), "mirrored" (this machine's GPUs/CPUs), "multi_worker" (TF_CONFIG)
    mixed_precision: bool = False  # float16 compute on a GPU ("mixed_float16"); refused without a GPU

    #: fields used only after the last epoch: changing them re-finishes a completed run instead of restarting it
    POST_TRAINING_FIELDS: ClassVar[frozenset[str]] = frozenset({"age_readout", "tta_zoom", "add_descriptor",
                                                                    "descriptor_augment", "detail_cap", "export"})
    #: fields that say where the same computation runs: a run may resume under another one (e.g. on one device)
    PLACEMENT_FIELDS: ClassVar[frozenset[str]] = frozenset({"distribution"})

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {list(DISTRIBUTIONS)}, not {self.distribution!r}")
        if not isinstance(self.mixed_precision, bool):
            raise ValueError(f"mixed_precision is true or false, not {self.mixed_precision!r}")

    @property
    def output_name(self) -> str:
        return self.name or self.model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training_fields(self) -> dict[str, Any]:
        """The fields that shape the weights (a run resumes only if these are unchanged)."""
        left_out = self.POST_TRAINING_FIELDS | self.PLACEMENT_FIELDS
        return {k: v for k, v in self.to_dict().items() if k not in left_out}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """A saved config, with ``overrides`` replacing its fields (e.g. ``epochs=1`` for a quick run)."""
        return cls.from_dict({**json.loads(Path(path).read_text()), **overrides})
