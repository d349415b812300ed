"""`meddet train` and `meddet evaluate --json` end to end on a tiny config and synthetic data."""

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

import dicom_node.cli.ml  # noqa: F401  (registers the commands)
from dicom_node.cli import app


def test_train_then_evaluate_json(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    runner = CliRunner()
    out = tmp_path / "run"
    done = runner.invoke(
        app,
        [
            "train",
            "--config",
            "tiny",
            "--data",
            "synthetic",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--images",
            "16",
            "--threads",
            "1",
            "--no-progress",
        ],
    )
    assert done.exit_code == 0, done.output
    assert {"last.pt", "best.pt", "model.pt", "model.json"} <= {p.name for p in out.iterdir()}
    assert "exported" in done.output

    done = runner.invoke(
        app, ["evaluate", "--checkpoint", str(out / "model.pt"), "--data", "synthetic:hard", "--images", "8", "--json"]
    )
    assert done.exit_code == 0, done.output
    metrics = json.loads(done.output)
    assert metrics["model_version"] == json.loads((out / "model.json").read_text())["version"]
    assert metrics["images"] == 8 and metrics["objects"] > 0
    assert set(metrics["per_class"]) == {"herniation", "normal_disc"}
    assert 0.0 <= metrics["map50"] <= 1.0


def test_train_rejects_an_unknown_data_spec(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["train", "--config", "tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert done.exit_code == 2 and "neither" not in done.output
    assert "expected" in done.output


def test_train_and_evaluate_on_dicom_series_with_a_box_file(tmp_path: Path) -> None:
    """`meddet synth` output (DICOM + ground_truth.json) is a training folder, as real data is."""
    import dicom_node.cli.data  # noqa: F401  (registers `meddet synth`)

    torch.set_num_threads(1)
    runner = CliRunner()
    made = runner.invoke(
        app,
        ["synth", "--out", str(tmp_path / "study"), "--studies", "1", "--seed", "3", "--slices", "6", "--size", "224"],
    )
    assert made.exit_code == 0, made.output
    done = runner.invoke(
        app,
        [
            "train",
            "--config",
            "tiny",
            "--data",
            str(tmp_path / "study"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--threads",
            "1",
            "--no-progress",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "5 train / 1 val images" in done.output  # every tenth slice validates
    scored = runner.invoke(
        app,
        ["evaluate", "--checkpoint", str(tmp_path / "run" / "model.pt"), "--data", str(tmp_path / "study"), "--json"],
    )
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["images"] == 6


def test_train_discs_fine_tunes_only_a_named_net_from_the_checkpoint() -> None:
    import dicom_node.cli.discs  # noqa: F401  (registers the commands)
    from detector import SHIPPED_CHECKPOINT
    from detector import checkpoint as ckpt
    from detector.discs.model import member_states
    from dicom_node.cli.discs import _start_from

    stored = ckpt.load(SHIPPED_CHECKPOINT)["discs"]
    warm, fresh = _start_from(None, None), _start_from(None, "herniation")

    def same(nets: list, states: list) -> None:  # an ensemble: each member
        assert len(nets) == len(states)
        for net, stored_state in zip(nets, states, strict=True):
            for name, tensor in net.state_dict().items():
                torch.testing.assert_close(tensor.float(), stored_state[name].float())

    hernias = member_states(stored, "herniation")
    same(warm.herniation_members(), hernias)
    assert any(
        not torch.equal(t, hernias[0][n].float())
        for n, t in fresh.herniation.state_dict().items()
        if t.is_floating_point()
    )
    same(fresh.level_members(), member_states(stored, "level"))  # the other net is kept either way
    bad = CliRunner().invoke(app, ["train-discs", "--warm", "--epochs", "1"])
    assert bad.exit_code == 2 and "--only" in bad.output
