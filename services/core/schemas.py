"""Pydantic schemas shared by every service: run records, requests, task payloads."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from netlapse.core.modelspec import ModelRef, ModelSpec

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop", "adadelta"]
TrainingDevice = Literal["auto", "cpu", "cuda"]
RUN_ID_RE = re.compile(r"^[a-z0-9]{8,32}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    """Unknown fields are errors, so a typo never becomes a silent default."""

    model_config = ConfigDict(extra="forbid")


class TrainingConfig(Strict):
    epochs: int = Field(
        1, ge=1, description="passes over the training split (the server caps it, see max_epochs)"
    )
    batch_size: int = Field(128, ge=1, le=4096)
    optimizer: Optimizer = "sgd"
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW betas, each in [0, 1)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_train_samples: int | None = Field(None, ge=1, description="use only the first N training samples")
    device: TrainingDevice = Field(
        "auto", description="auto = CUDA when the trainer has it, else CPU; cuda needs a GPU trainer"
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


CaptureMode = Literal["lossless", "lossy"]


class CaptureConfig(Strict):
    every: int = Field(
        1, ge=1, le=100_000, description="capture every N-th step; 0 and the last are always kept"
    )
    mode: CaptureMode = Field(
        "lossless",
        description="lossless (bit-exact, the default) or lossy: keyframes exact, steps between within "
        "lossy_rel_error of each tensor's largest magnitude at its keyframe",
    )
    lossy_rel_error: float = Field(
        1e-3,
        ge=1e-6,
        le=0.1,
        description="lossy mode: max abs error / the tensor's max |value| at its keyframe",
    )


class RunCreate(Strict):
    """Body of POST /api/runs."""

    name: str = Field("run", min_length=1, max_length=120)
    model: ModelRef
    dataset: str = Field(..., min_length=1, max_length=120)
    training: TrainingConfig = TrainingConfig()
    capture: CaptureConfig = CaptureConfig()


class Progress(BaseModel):
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    accuracy: float | None = None
    eta_seconds: float | None = None


class RunSummary(BaseModel):
    train_seconds: float | None = None
    capture_wait_seconds: float | None = None
    capture_copy_seconds: float | None = None
    raw_bytes: int | None = None
    stored_bytes: int | None = None
    steps_captured: int | None = None
    final_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None


RunSource = Literal["server", "sdk"]


class SdkInfo(BaseModel):
    """What the SDK reports about a run recorded in the user's own training process (docs/sdk.md)."""

    config: dict[str, Any] = {}
    modules: dict[str, str] = Field(
        default_factory=dict, description="module path -> class name (e.g. Conv2d), in model order"
    )
    buffers: bool = Field(False, description="buffers (BatchNorm running statistics) are captured too")
    torch_version: str = ""
    host: str = ""
    program: bool = Field(False, description="runs/{id}/sdk/program.bin (torch.export) was uploaded")
    eval_data: bool = Field(False, description="runs/{id}/sdk/eval_inputs.npy and eval_labels.npy exist")
    offline: bool = Field(False, description="recorded to a local directory and pushed later")
    heartbeat_at: datetime | None = None


class NoLayerSpec(ValueError):
    """A run recorded by the SDK from the user's own model: it has no declarative layer spec or dataset."""


class RunRecord(BaseModel):
    """The run record (runs/{id}/run.json): the source of truth for a run.

    ``source`` says who trains it: the server's trainer (``model``, ``dataset`` and ``training`` set) or the
    SDK in the user's own process (those are None; ``sdk`` describes the run instead)."""

    id: str
    name: str
    owner: str = "local"
    status: RunStatus = "queued"
    source: RunSource = "server"
    preset: str | None = None
    model: ModelSpec | None = None
    dataset: str | None = None
    training: TrainingConfig | None = None
    capture: CaptureConfig = CaptureConfig()
    sdk: SdkInfo | None = None
    progress: Progress = Progress()
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: str | None = None
    summary: RunSummary = RunSummary()
    tape_complete: bool = False
    cancel_requested: bool = Field(False, description="a cancel was asked for; the trainer stops soon after")
    lease_owner: str | None = Field(None, description="the trainer (host:pid:token) holding the running run")
    lease_until: datetime | None = Field(None, description="the lease ends then unless its trainer renews it")
    resumed_from: int | None = Field(None, description="the step the latest attempt resumed from")

    def layer_spec(self) -> ModelSpec:
        """The declarative model of a server run; NoLayerSpec for an SDK run (the user's own model)."""
        if self.model is None:
            raise NoLayerSpec(
                f"run {self.id} was recorded by the SDK from its own model; it has no layer spec"
            )
        return self.model

    def dataset_name(self) -> str:
        """The built-in dataset of a server run; NoLayerSpec for an SDK run (its data is the user's)."""
        if self.dataset is None:
            raise NoLayerSpec(f"run {self.id} was recorded by the SDK; it has no built-in dataset")
        return self.dataset

    def training_config(self) -> TrainingConfig:
        """The training settings of a server run; NoLayerSpec for an SDK run (it trains in its own loop)."""
        if self.training is None:
            raise NoLayerSpec(f"run {self.id} was recorded by the SDK; the server did not train it")
        return self.training


class RunPublic(RunRecord):
    """What the API returns for a run."""


class TrainTask(BaseModel):
    """Payload of the trainer's Celery task."""

    run_id: str


class AnalysisResult(BaseModel):
    """What an analyzer task returns: where the result lies in the store."""

    key: str
    cached: bool = False
    seconds: float = 0.0
    meta: dict[str, Any] = {}


def run_key(run_id: str) -> str:
    return f"runs/{run_id}/run.json"


def tape_prefix(run_id: str) -> str:
    return f"runs/{run_id}/tape/"


def metrics_key(run_id: str) -> str:
    return f"runs/{run_id}/metrics.json"


def analysis_prefix(run_id: str) -> str:
    return f"runs/{run_id}/analysis/"


# --- analyses (docs/architecture.md, "Analyses"): requests the api validates, payloads the analyzer runs ---

FeaturePointName = Literal["post", "pre"]
SplitName = Literal["test", "train"]


class ScatterTask(BaseModel):
    """Payload of the analyzer's scatter task: value at ``from_step`` (x) vs change to ``to_step`` (y)."""

    run_id: str
    name: str
    from_step: int
    to_step: int
    max_points: int = 20_000
    bins: int = 64
    seed: int = 0

    def cache_params(self) -> dict[str, Any]:
        """The request fields that determine the result (its cache key)."""
        return {
            "name": self.name,
            "from": self.from_step,
            "to": self.to_step,
            "max_points": self.max_points,
            "bins": self.bins,
            "seed": self.seed,
        }


class ActivationRequest(Strict):
    """Body of POST /api/runs/{id}/activations: the per-label normalized activations of Eq. 1."""

    step: int = Field(..., ge=0, description="a captured step")
    layer: str = Field(..., min_length=1, max_length=64, description="a conv layer of the run's model")
    per_label: int = Field(100, ge=1, le=1000, description="correctly predicted inputs per label (at most)")
    point: FeaturePointName = Field(
        "post", description="feature map after (post) or before (pre) the activation"
    )
    split: SplitName = Field("test", description="dataset split the inputs come from, in dataset order")


class ActivationCompareRequest(Strict):
    """Body of POST /api/runs/{id}/activations/compare: one layer's Eq. 1 matrix at two steps."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    layer: str = Field(..., min_length=1, max_length=64)
    from_step: int = Field(..., ge=0, alias="from", description="a captured step")
    to_step: int = Field(..., ge=0, alias="to", description="a captured step")
    per_label: int = Field(100, ge=1, le=1000)
    point: FeaturePointName = "post"
    split: SplitName = "test"


class ActivationTask(BaseModel):
    """Payload of the analyzer's activations task (one step; every conv layer and point is computed at once)."""

    run_id: str
    step: int
    layer: str
    per_label: int = 100
    point: FeaturePointName = "post"
    split: SplitName = "test"

    def cache_params(self) -> dict[str, Any]:
        """The request fields that determine the result (its cache key)."""
        return {
            "step": self.step,
            "layer": self.layer,
            "per_label": self.per_label,
            "point": self.point,
            "split": self.split,
        }


class FeatureMapTask(BaseModel):
    """Payload of the analyzer's feature-map task: one input's maps of one conv layer at one step."""

    run_id: str
    step: int
    layer: str
    split: SplitName = "test"
    index: int
    point: FeaturePointName = "post"

    def cache_params(self) -> dict[str, Any]:
        """The request fields that determine the result (its cache key)."""
        return {
            "step": self.step,
            "layer": self.layer,
            "split": self.split,
            "index": self.index,
            "point": self.point,
        }


class CompactTask(BaseModel):
    """Payload of the analyzer's compaction task: rewrite a run's closed tape segments time-major."""

    run_id: str
