"""The netlapse SDK: record every parameter after every optimizer step of your own PyTorch training.

    import netlapse

    run = netlapse.init(name="resnet-lr3e-4", config={"lr": 3e-4})   # server: $NETLAPSE_URL
    run.watch(model, optimizer, example_input=batch)                 # step 0 now, then every optimizer.step()
    for x, y in loader:
        ...; optimizer.step()
        run.log({"loss": loss.item()})
    run.finish()

docs/sdk.md describes the API, what is captured, the run's lifecycle and the limits. The SDK imports only the
shared core (capture pipeline, tape codec, schemas), never a service.
"""

from __future__ import annotations

from netlapse.sdk.run import NotWatching, Run, init
from netlapse.sdk.sink import UploadFailed
from netlapse.sdk.transport import IngestRejected, ServerUnreachable

__all__ = ["IngestRejected", "NotWatching", "Run", "ServerUnreachable", "UploadFailed", "init"]
