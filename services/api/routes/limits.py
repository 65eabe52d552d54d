"""GET /api/limits: the bounds this server enforces, as it enforces them (clients and tests read them here)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from netlapse.api.deps import SettingsDep
from netlapse.api.limits import MAX_BODY_BYTES
from netlapse.api.routes.catalog import MAX_SAMPLE_INDICES
from netlapse.api.routes.runs import MAX_LISTED_RUNS

router = APIRouter(tags=["limits"])


@router.get("/limits")
def limits(settings: SettingsDep) -> dict[str, Any]:
    """Every per-request and per-user bound of this server (docs/security.md says what each protects).
    Bounds on query parameters (scatter points, index lists) are in the OpenAPI document as ``maximum``."""
    return {
        "max_body_bytes": MAX_BODY_BYTES,
        "max_listed_runs": MAX_LISTED_RUNS,
        "max_sample_indices": MAX_SAMPLE_INDICES,
        "max_epochs": settings.max_epochs,
        "max_params": settings.max_params,
        "max_activation_elements": settings.max_activation_elements,
        "max_step_flops": settings.max_step_flops,
        "max_json_values": settings.max_json_values,
        "max_response_values": settings.max_response_values,
        "user_max_active_runs": settings.user_max_active_runs,
        "user_max_analyses": settings.user_max_analyses,
        "analysis_timeout_s": settings.analysis_timeout_s,
        "run_max_raw_bytes": settings.run_max_raw_bytes,
        "user_storage_quota_bytes": settings.user_storage_quota_bytes,
        "train_time_limit_s": settings.train_time_limit_s,
        "task_time_limit_s": settings.task_time_limit_s,
        "worker_max_memory_mb": settings.worker_max_memory_mb,
        "auth_cache_s": settings.auth_cache_s,
        "ws_ticket_ttl_s": settings.ws_ticket_ttl_s,
        "ws_max_per_user": settings.ws_max_per_user,
    }
