"""SDK model programs (netlapse.core.program): export, pickle-free storage, allow-listed loading, exact replay."""

from __future__ import annotations

import json
import pickletools
import warnings

import pytest
import torch
from torch import nn

from netlapse.core import program as program_mod
from netlapse.core.program import ProgramError, export_program, load_program


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.a_bn = nn.BatchNorm2d(c)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b_bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a_bn(self.a(x)))
        return torch.relu(x + self.b_bn(self.b(y)))


class ResNet(nn.Module):
    """A residual CNN with BatchNorm, dropout and an in-place ReLU: nothing a preset can express."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.block = Block(6)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.act(self.stem(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(self.drop(x))


def trained_resnet() -> ResNet:
    torch.manual_seed(0)
    m = ResNet()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(3):  # move the weights and the batchnorm statistics away from their defaults
        loss = m(torch.randn(8, 1, 10, 10)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


@pytest.fixture(scope="module")
def exported() -> tuple[ResNet, bytes]:
    m = trained_resnet()
    m.train()
    data = export_program(m, torch.randn(4, 1, 10, 10))
    assert data is not None
    assert m.training and m.block.a_bn.training and m.drop.training  # training flags restored after export
    return m, data


def test_exported_program_replays_the_model_exactly(exported: tuple[ResNet, bytes]) -> None:
    m, data = exported
    prog = load_program(data)
    assert prog.dynamic_batch
    m.eval()
    x = torch.randn(37, 1, 10, 10)  # another batch size than the example's
    with torch.no_grad():
        expected = m(x)
        a_post = torch.relu(m.block.a_bn(m.block.a(m.act(m.stem(x)))))
        stem_pre = m.stem(x)
    mod = prog.module(m.state_dict())
    assert torch.equal(mod(x), expected)
    assert [c.name for c in prog.conv_layers] == ["stem", "block.a", "block.b"]
    assert torch.equal(mod.feature_maps(x, "block.a", "post"), a_post)
    assert torch.equal(mod.feature_maps(x, "stem", "pre"), stem_pre)
    # block.b's output joins the residual sum before any activation: post is its batchnorm output
    b = prog.conv_layer("block.b")
    assert (b.activation, b.post == b.pre) == (None, True)


def test_program_takes_the_weights_it_is_given(exported: tuple[ResNet, bytes]) -> None:
    m, data = exported
    other = trained_resnet()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    other.eval()
    x = torch.randn(5, 1, 10, 10)
    with torch.no_grad():
        expected = other(x)
    assert torch.equal(load_program(data).module(other.state_dict())(x), expected)


def test_program_holds_no_weights_and_no_pickle(exported: tuple[ResNet, bytes]) -> None:
    m, data = exported
    doc = json.loads(data)  # plain JSON …
    assert max(data) < 0x80  # … in ASCII: no byte can be a pickle opcode's protocol header (0x80)
    with pytest.raises(ValueError, match="opcode b'{' unknown"):
        list(pickletools.genops(data))  # not a pickle stream
    names = {e.get("target") for e in doc["inputs"] if e["kind"] == "state"}
    assert names == set(m.state_dict())  # named, not stored
    # eval mode never reads batchnorm's step counters, so a tape without them (integers are not captured) runs
    assert set(load_program(data).required_state.values()) == {
        k for k in m.state_dict() if not k.endswith("num_batches_tracked")
    }
    assert not [e for e in doc["inputs"] if e["kind"] == "constant"]
    # the weights are not in it: other weights export to the same bytes
    torch.manual_seed(123)
    other = ResNet()
    assert export_program(other, torch.randn(4, 1, 10, 10)) == data


def test_missing_state_is_named(exported: tuple[ResNet, bytes]) -> None:
    m, data = exported
    prog = load_program(data)
    params_only = {k: v for k, v in m.state_dict().items() if "running" not in k}
    assert prog.missing_state(params_only) == [
        "block.a_bn.running_mean",
        "block.a_bn.running_var",
        "block.b_bn.running_mean",
        "block.b_bn.running_var",
    ]
    assert prog.buffers == {k for k in m.state_dict() if "_bn.running" in k or "num_batches" in k}
    with pytest.raises(ProgramError, match="block.a_bn.running_mean"):
        prog.module(params_only)


def _tamper(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    node = next(n for n in doc["nodes"] if n["op"] == "aten.relu.default")
    node.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ("builtins.eval", "not an ATen operator"),
        ("os.system", "not an ATen operator"),
        ("aten.relu_.default", "not allowed"),  # in place
        ("aten.copy_.default", "not allowed"),  # mutates its input
        ("aten.__class__.default", "does not exist"),
        ("aten.no_such_op.default", "does not exist"),
        ("aten._foreach_add.List", "not allowed"),  # not Core ATen
    ],
)
def test_operators_outside_the_allow_list_are_refused(
    exported: tuple[ResNet, bytes], op: str, message: str
) -> None:
    with pytest.raises(ProgramError, match=message):
        load_program(_tamper(exported[1], op=op))


def test_arguments_outside_the_vocabulary_are_refused(exported: tuple[ResNet, bytes]) -> None:
    data = exported[1]
    with pytest.raises(ProgramError, match="not a value a program may hold"):
        load_program(_tamper(data, args=[{"node": "convolution"}, {"py/object": "os.system"}]))
    with pytest.raises(ProgramError, match="not defined before it"):
        load_program(_tamper(data, args=[{"node": "addmm"}]))  # a forward reference (cycles impossible)
    with pytest.raises(ProgramError, match="dtype 'object'"):
        load_program(_tamper(data, kwargs={"dtype": {"dtype": "object"}}))
    with pytest.raises(ProgramError, match="not JSON"):
        load_program(b"\x80\x04\x95" + data)  # a pickle header in front
    with pytest.raises(ProgramError, match="format"):
        load_program(b'{"format": "pickle"}')


def test_a_program_that_fails_to_run_says_where(exported: tuple[ResNet, bytes]) -> None:
    m, data = exported
    broken = load_program(_tamper(data, args=[{"node": "convolution"}, "not-a-tensor"]))  # relu(x, str)
    with pytest.raises(ProgramError, match=r"failed at node relu, aten.relu.default \(in act\)"):
        broken.module(m.state_dict())(torch.randn(2, 1, 10, 10))
    with pytest.raises(ProgramError, match="nest"):
        load_program(
            json.dumps({"format": "netlapse-program", "version": 1, "inputs": [], "nodes": []})
            .encode()
            .replace(b'"nodes": []', b'"nodes": [' + b"[" * 100_000 + b"]" * 100_000 + b"]")
        )


class Shaped(nn.Module):
    """Reshapes with the literal batch size, so torch.export cannot keep the batch symbolic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 4)
        self.register_buffer("scale", torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.gelu(self.conv(x)) * self.scale + torch.tensor(0.25)
        return self.fc(y.reshape(3, -1))


class Counted(nn.Module):
    """Reads a persistent integer buffer (never on the tape, which holds floating-point tensors only)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("order", torch.tensor([3, 1, 0, 2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)[:, self.order]


def test_integer_buffers_the_graph_reads_travel_inline() -> None:
    torch.manual_seed(2)
    m = Counted()
    data = export_program(m, torch.randn(2, 4))
    assert data is not None
    prog = load_program(data)
    floats = {k: v for k, v in m.state_dict().items() if v.is_floating_point()}
    assert set(prog.required_state.values()) == set(floats)
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(prog.module(floats)(x), m(x))


def test_fixed_batch_program_runs_any_number_of_inputs() -> None:
    torch.manual_seed(1)
    m = Shaped().eval()
    data = export_program(m, torch.randn(3, 1, 6, 6))
    assert data is not None
    prog = load_program(data)
    assert (prog.dynamic_batch, prog.batch_size) == (False, 3)
    assert {e["kind"] for e in json.loads(data)["inputs"]} == {"input", "state", "constant"}
    x = torch.randn(8, 1, 6, 6)  # 3 + 3 + 2 (padded)
    with torch.no_grad():
        expected = torch.cat([m(x[0:3]), m(x[3:6]), m(torch.cat([x[6:8], x[7:8]]))[:2]])
    mod = prog.module(m.state_dict())
    assert torch.equal(mod(x), expected)
    assert prog.conv_layers[0].activation == "gelu"


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum().item() > 0:  # Python control flow on a value: torch.export cannot trace it
            return self.fc(x)
        return -self.fc(x)


def test_unexportable_model_warns_once_and_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(program_mod, "_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert export_program(DataDependent(), torch.ones(2, 4)) is None
        assert export_program(DataDependent(), torch.ones(2, 4)) is None
    texts = [str(w.message) for w in caught if "netlapse" in str(w.message)]
    assert len(texts) == 1
    assert "recording goes on" in texts[0]
