"""One settings object for every service, read from the environment (prefix ``NETLAPSE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from netlapse.core.tape.options import TapeOptions


class Settings(BaseSettings):
    """Configuration shared by api, trainer and analyzer. Every field maps to ``NETLAPSE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="NETLAPSE_", env_file=None, extra="ignore", frozen=True)

    # Where runs, tapes and analysis results live: file:///abs/path or s3://bucket/prefix.
    store_url: str = Field(default="", description="object store URL; empty = file://<data_dir>/store")
    data_dir: Path = Field(default=Path(".data"), description="local data: datasets, embedded redis, store")
    s3_endpoint: str = Field(default="", description="host:port of an S3/MinIO server; enables S3 when set")
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "netlapse"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="broker, result backend, events")
    events_maxlen: int = Field(default=100_000, description="approximate length cap of each run's stream")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    frontend_dir: Path = Field(default=Path("frontend/dist"), description="built UI served at /")

    torch_threads: int = Field(
        default=0, ge=0, description="intra-op threads per worker process; 0 = one per core"
    )
    analysis_timeout_s: float = Field(default=120.0, gt=0, description="api waits this long for the analyzer")
    user_max_analyses: int = Field(
        default=8, ge=0, description="analysis requests one user may have in flight at once (429 beyond)"
    )

    # Tape tuning.
    segment_target_bytes: int = Field(default=TapeOptions.segment_target_bytes, ge=64 * 1024)
    segment_max_steps: int = Field(default=TapeOptions.segment_max_steps, ge=1)
    capture_buffers: int = Field(default=4, ge=1, description="snapshots in flight between loop and writer")
    zstd_level: int = Field(default=TapeOptions.zstd_level, ge=-5, le=19)
    keyframe_interval: int = Field(
        default=TapeOptions.keyframe_interval,
        ge=1,
        le=4096,
        description="tape: every N-th captured step is stored whole",
    )
    capture_threads: int = Field(
        default=0, ge=0, le=64, description="encoder threads per run; 0 = 1 on CPU, up to 8 on CUDA"
    )
    capture_mode: str = Field(
        default="auto",
        pattern="^(auto|thread|inline)$",
        description="where snapshots are encoded: thread (a writer thread), inline (the training thread with "
        "torch's own threads, CPU models only; uploads stay on a thread) or auto (inline where torch runs on an "
        "OpenMP team on the CPU, else thread)",
    )
    capture_nice: int = Field(
        default=10, ge=0, le=19, description="CPU niceness added to encoder threads, so training goes first"
    )
    compact_after_run: bool = Field(default=True, description="send a compaction task when a run ends")
    compact_during_run_steps: int = Field(
        default=128, ge=0, description="also compact during a run every N committed steps; 0 = never"
    )
    compact_group_steps: int = Field(default=16, ge=2, le=256, description="time-major steps per frame")
    compact_unit_steps: int = Field(default=64, ge=2, description="steps per compaction unit (live runs)")
    compact_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness of a compaction task, so explorer reads and training go first",
    )

    max_epochs: int = Field(default=100, ge=1)
    # Per-user bounds (docs/security.md): active runs, raw capture per run, storage per user (0 = no bound).
    user_max_active_runs: int = Field(
        default=4, ge=0, description="queued + running runs per user (429 beyond)"
    )
    run_max_raw_bytes: int = Field(
        default=50_000_000_000, ge=0, description="planned raw capture of one run (captured steps x snapshot)"
    )
    user_storage_quota_bytes: int = Field(
        default=500_000_000_000, ge=0, description="raw capture all of one user's runs may hold or plan"
    )
    # Responses that scale with steps x elements (docs/security.md): over these, a 422 names the limit.
    max_json_values: int = Field(
        default=4_000_000, ge=1, description="numbers one JSON response may carry (ask for .npy beyond)"
    )
    max_response_values: int = Field(
        default=64_000_000, ge=1, description="numbers one tensor or trajectory response may carry as .npy"
    )
    # Runaway tasks (docs/security.md): a task over its time or a worker over its memory is stopped, with the reason.
    train_time_limit_s: float = Field(default=86_400.0, gt=0, description="longest one training task may run")
    task_time_limit_s: float = Field(
        default=3600.0, gt=0, description="longest an analysis/compaction task may run"
    )
    worker_max_memory_mb: int = Field(
        default=16_384, ge=0, description="resident memory a worker process may use; 0 = no ceiling"
    )
    # Compute bounds of a run's model spec, checked before it is accepted (docs/security.md).
    max_params: int = Field(default=64_000_000, ge=1, description="largest parameter count of a model spec")
    max_activation_elements: int = Field(
        default=16_000_000,
        ge=1,
        description="activation elements per input sample a spec may keep for backward",
    )
    max_step_flops: float = Field(
        default=1e13,
        gt=0,
        description="FLOPs of one training step (3 forward passes x batch_size) a spec may need",
    )

    # Durability (docs/durability.md): resume after a crash, leases, the reaper.
    max_run_attempts: int = Field(
        default=5, ge=1, description="a run whose trainer died this many times is marked failed"
    )
    resume_interval_s: float = Field(
        default=30.0, ge=0, description="at most one resume checkpoint per this long; 0 = at each segment"
    )
    run_lease_s: float = Field(
        default=60.0, ge=5, description="a trainer that did not renew its run's lease this long is dead"
    )
    cuda_trainers: bool = Field(
        default=False, description="GPU trainers consume train-gpu; off = training.device 'cuda' is a 422"
    )
    reaper_interval_s: float = Field(
        default=30.0, gt=0, description="how often each trainer worker looks for runs nobody is working on"
    )

    # Multi-user: when on, every /api route but health, presets and datasets needs a token
    # (`netlapse user add NAME`), and each user sees only their own runs.
    auth_required: bool = Field(
        default=False, description="require a bearer token; off = every request is 'local'"
    )

    # Cross-site and LAN protections of the api (docs/security.md).
    allowed_hosts: str = Field(
        default="",
        description="comma-separated Host names the api answers (else 400); empty = api_host, localhost, "
        "127.0.0.1; * = any",
    )
    allowed_origins: str = Field(
        default="",
        description="comma-separated origins (scheme://host:port) allowed to call the api besides its own",
    )
    auth_cache_s: float = Field(
        default=5.0, ge=0, le=300, description="the api remembers a token lookup (valid or not) this long"
    )
    ws_ticket_ttl_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="a WebSocket ticket (POST /api/ws-ticket) is valid this long, once",
    )
    ws_max_per_user: int = Field(default=8, ge=1, description="live event WebSockets one user may hold open")

    # SDK runs (docs/sdk.md): recorded in the user's own process, uploaded through /api/ingest.
    sdk_heartbeat_timeout_s: float = Field(
        default=90.0, gt=0, description="an SDK run silent this long is marked failed (training process lost)"
    )
    sdk_reaper_interval_s: float = Field(
        default=10.0, gt=0, description="how often the api looks for SDK runs whose heartbeats stopped"
    )
    ingest_max_object_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024 * 1024, description="largest segment, program or eval upload"
    )

    def resolved_store_url(self) -> str:
        """The store URL actually used: S3 when an endpoint is set, else the explicit URL, else a local dir."""
        if self.store_url:
            return self.store_url
        if self.s3_endpoint:
            return f"s3://{self.s3_bucket}"
        return f"file://{(self.data_dir / 'store').resolve()}"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process."""
    return Settings()
