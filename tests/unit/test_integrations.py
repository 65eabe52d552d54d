"""The Lightning and Hugging Face callbacks against the real libraries, recording offline (no server needed):
the expected number of optimizer steps, bit-exact final weights, the metrics, and a failure marked as one."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

# Nothing may come from the Hugging Face hub (the model is built from a config): set before transformers reads it.
os.environ["HF_HUB_OFFLINE"] = "1"

import lightning.pytorch as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

from netlapse.core.metrics import read_metrics  # noqa: E402
from netlapse.core.runs import RunRepository  # noqa: E402
from netlapse.core.schemas import RunRecord, tape_prefix  # noqa: E402
from netlapse.core.tape import TapeReader  # noqa: E402
from netlapse.integrations.lightning import NetlapseCallback as LightningCallback  # noqa: E402
from netlapse.integrations.transformers import NetlapseCallback as HFCallback  # noqa: E402
from netlapse.sdk.offline import RunsDirStore  # noqa: E402


def recorded(root: Path, run_id: str) -> tuple[RunRecord, TapeReader, dict[str, Any]]:
    """What an offline run directory holds: the run record, its tape and its metrics."""
    store = RunsDirStore(root)
    rec = RunRepository(store).get(run_id)  # type: ignore[arg-type]
    return rec, TapeReader(store, tape_prefix(run_id)), read_metrics(store, run_id)  # type: ignore[arg-type]


def same_bits(a: np.ndarray, b: torch.Tensor) -> bool:
    t = b.detach().cpu().numpy()
    return a.shape == t.shape and a.dtype == t.dtype and a.tobytes() == t.tobytes()


# --- PyTorch Lightning -----------------------------------------------------------------------------------------


class LitNet(L.LightningModule):
    def __init__(self, lr: float = 1e-2, fail_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 1).flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.fail_at is not None and self.global_step >= self.hparams.fail_at:
            raise RuntimeError("the loss exploded")
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(
        TensorDataset(x[:16], y[:16]), batch_size=8
    )


def lightning_trainer(cb: Any, **kw: Any) -> Any:
    return L.Trainer(
        accelerator="cpu",
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def test_lightning_records_every_optimizer_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LitNet()
    cb = LightningCallback(name="lit", dir=str(tmp_path), buffers=True)
    trainer = lightning_trainer(cb, max_epochs=2, accumulate_grad_batches=2)
    train, val = loaders()
    trainer.fit(model, train, val)
    # 5 batches per epoch, an update every 2 (and one for the epoch's last odd batch): 3 per epoch
    assert trainer.global_step == 6
    rec, tape, metrics = recorded(tmp_path, cb.run.id)
    assert (rec.status, rec.source, rec.name) == ("succeeded", "sdk", "lit")
    assert rec.sdk is not None and rec.sdk.config["lr"] == 0.01 and rec.sdk.program
    assert tape.steps() == list(range(7))
    names = [t.name for t in tape.tensors()]
    assert names == [k for k, v in model.state_dict().items() if v.is_floating_point()]
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert same_bits(tape.read(name, 6), value), name
    rows = {r["step"]: r for r in metrics["steps"]}
    assert all("train_loss" in rows[s] for s in range(1, 7))
    assert "val_loss" in rows[3] and "val_loss" in rows[6]  # after each epoch's validation


def test_lightning_failure_marks_the_run_failed_and_keeps_its_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cb = LightningCallback(name="lit-fail", dir=str(tmp_path), example_input=False)
    trainer = lightning_trainer(cb, max_epochs=3)
    with pytest.raises(RuntimeError, match="the loss exploded"):
        trainer.fit(LitNet(fail_at=4), loaders()[0])
    rec, tape, _ = recorded(tmp_path, cb.run.id)
    assert rec.status == "failed" and rec.error == "RuntimeError: the loss exploded"
    assert tape.steps() == list(range(5))  # steps 0..4 committed and readable
    assert rec.sdk is not None and not rec.sdk.program  # example_input=False: no export


def test_the_older_pytorch_lightning_package_takes_the_same_callback(tmp_path: Path) -> None:
    import pytorch_lightning

    class OldLit(pytorch_lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.fc(x.flatten(1)), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = LightningCallback(name="old-pl", dir=str(tmp_path), example_input=False)
    trainer = pytorch_lightning.Trainer(
        accelerator="cpu",
        callbacks=[cb],
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(OldLit(), loaders()[0])
    rec, tape, _ = recorded(tmp_path, cb.run.id)
    assert rec.status == "succeeded" and tape.steps() == [0, 1, 2, 3]


# --- Hugging Face Trainer ---------------------------------------------------------------------------------------


class Tokens(Dataset):
    """Random token sequences with a label; ``bad`` makes one label out of range (the loss raises on it)."""

    def __init__(self, n: int, bad: int | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(1, 50, (n, 6), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        if bad is not None:
            self.labels[bad] = 7

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def hf_trainer(tmp_path: Path, cb: Any, data: Dataset) -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        run_name="bert-tiny",
    )
    return transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])


def test_transformers_records_every_optimizer_step(tmp_path: Path) -> None:
    cb = HFCallback(dir=str(tmp_path / "runs"))
    trainer = hf_trainer(tmp_path, cb, Tokens(24))
    trainer.train()
    # 24 examples / 4 per batch = 6 batches, an update every 2: 3 per epoch, 2 epochs
    assert trainer.state.global_step == 6
    rec, tape, metrics = recorded(tmp_path / "runs", cb.run.id)
    assert (rec.status, rec.name) == ("succeeded", "bert-tiny")
    assert rec.sdk is not None and rec.sdk.config["gradient_accumulation_steps"] == 2
    assert tape.steps() == list(range(7))
    state = trainer.model.state_dict()
    assert {t.name for t in tape.tensors()} == {n for n, _ in trainer.model.named_parameters()}
    for t in tape.tensors():
        assert same_bits(tape.read(t.name, 6), state[t.name]), t.name
    rows = {r["step"]: r for r in metrics["steps"]}
    assert all(math.isfinite(rows[s]["loss"]) for s in range(1, 7))  # the Trainer logs every step
    assert "learning_rate" in rows[1]


def test_transformers_failure_inside_the_context_marks_the_run_failed(tmp_path: Path) -> None:
    cb = HFCallback(name="bert-fail", dir=str(tmp_path / "runs"))
    trainer = hf_trainer(tmp_path, cb, Tokens(24, bad=9))  # in the 3rd batch: after step 1
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        with cb:
            trainer.train()
    rec, tape, _ = recorded(tmp_path / "runs", cb.run.id)
    assert rec.status == "failed" and rec.error == "IndexError: Target 7 is out of bounds."
    assert tape.steps() == [0, 1]
