"""Run one training attempt of a stored run in this process (a test's child, to be SIGKILLed mid-run).

``python -m tests.integration.trainer_child STORE_DIR RUN_ID`` claims the run (or takes it over from a dead
holder) and trains it to the end, like a trainer worker would, without Celery or Redis."""

from __future__ import annotations

import sys
from pathlib import Path

from netlapse.core.runs import RunRepository
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.trainer.scheduler import claim_next, new_owner_token
from netlapse.trainer.training import execute_run


def main(store_dir: str, run_id: str) -> int:
    settings = Settings(
        # Checkpoints a quarter second apart: segments (every 4 steps) get committed past each one, the moment
        # the from-checkpoint test kills at (with 0, a new checkpoint followed every commit).
        data_dir=Path(store_dir).parent,
        resume_interval_s=0.25,
        segment_max_steps=4,
        torch_threads=1,
    )
    store = LocalStore(store_dir)
    repo = RunRepository(store)
    owner = new_owner_token()
    rec = claim_next(repo, owner, lease_s=settings.run_lease_s, max_attempts=settings.max_run_attempts)
    if rec is None or rec.id != run_id:
        print(f"nothing to take (got {rec and rec.id})", file=sys.stderr)
        return 2
    final = execute_run(rec, owner, settings, store, None)
    print(final.status, final.error)
    return 0 if final.status == "succeeded" else 1


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1], sys.argv[2]))
