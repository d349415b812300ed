"""The level locator: window geometry, targets, reading the maps at a chain, the checkpoint."""

from __future__ import annotations

import numpy as np
import torch

from detector.discs.crops import CropRequest, _grid
from detector.discs.locator import (
    LOCATOR_WINDOW,
    N_DISC_LEVELS,
    STRIDE,
    LevelLocator,
    chain_log_probs,
    log_distribution,
    targets,
    to_window,
)
from detector.discs.locator_train import disc_points, draw_other_window, draw_window, draw_windows
from detector.discs.model import DiscModels
from detector.naming import NOT_DISC, fuse, name_chain


def test_to_window_inverts_the_sampling_grid_with_rotation_zoom_and_stretch() -> None:
    request = CropRequest(0, 120.3, 80.7, angle=0.25, zoom=1.1, stretch=0.9)
    spacing, h, w = (0.8, 0.7), 300, 300
    grid = _grid([request], LOCATOR_WINDOW, spacing, h, w, torch.device("cpu"))[0]
    for a, b in ((37, 91), (0, 0), (127, 64)):
        x, y = grid[a, b].tolist()
        image_point = np.array([[(y + 1) / 2 * (h - 1), (x + 1) / 2 * (w - 1)]])
        np.testing.assert_allclose(to_window(image_point, request, spacing), [[a, b]], atol=1e-3)


def test_targets_are_a_distribution_per_level_with_absent_levels_out_of_the_window() -> None:
    t = targets([np.array([40.0, 60.0]), None, np.array([-5.0, 60.0]), *[np.array([80.0, 64.0])] * 4])
    cells = LOCATOR_WINDOW.size // STRIDE
    assert t.shape == (N_DISC_LEVELS, cells * cells + 1)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(N_DISC_LEVELS))
    assert t[1, -1] == 1.0 and t[2, -1] == 1.0 and t[0, -1] == 0.0
    assert divmod(int(t[0, :-1].argmax()), cells) == (40 // STRIDE, 60 // STRIDE)


def test_chain_log_probs_reads_each_levels_map_at_the_chain_positions() -> None:
    cells = LOCATOR_WINDOW.size // STRIDE
    points = np.array([[20.0 + 12 * i, 60.0] for i in range(7)])  # seven positions, 12 px apart
    dist = np.full((N_DISC_LEVELS, cells * cells + 1), 1e-9)
    for level in range(N_DISC_LEVELS - 1):  # level j sits on position j + 1: the top one is no disc
        r, c = points[level + 1] // STRIDE
        dist[level, int(r) * cells + int(c)] = 1.0
    dist[-1, -1] = 1.0  # T1-T2 out of the window
    lp = chain_log_probs(np.log(dist / dist.sum(axis=1, keepdims=True)), points)
    assert lp.shape == (7, NOT_DISC + 1)
    assert int(np.argmax(lp[0])) == NOT_DISC
    assert [int(np.argmax(row)) for row in lp[1:]] == [0, 1, 2, 3, 4, 5]
    naming = name_chain(lp)
    assert naming.status == "found" and naming.names[:3] == [None, "C2-C3", "C3-C4"]


def test_fusion_of_two_opinions_keeps_a_distribution() -> None:
    rng = np.random.default_rng(0)
    a, b = (np.log(rng.dirichlet(np.ones(NOT_DISC + 1), size=4)) for _ in range(2))
    for how in ("mean", "product"):
        np.testing.assert_allclose(np.exp(fuse(a, b, how)).sum(axis=1), 1.0, rtol=1e-6)
    assert fuse(a, b, "level") is a and fuse(a, b, "locator") is b


def test_a_training_window_has_its_discs_where_the_targets_say() -> None:
    window, target = draw_window(np.random.default_rng([5, 1]), augment=False)
    assert window.shape == (1, LOCATOR_WINDOW.size, LOCATOR_WINDOW.size)
    torch.testing.assert_close(target.sum(dim=1), torch.ones(N_DISC_LEVELS))
    assert target[0, -1] == 0.0  # C2-C3 is in view: the window is anchored on the chain's top
    top = divmod(int(target[0, :-1].argmax()), LOCATOR_WINDOW.size // STRIDE)
    anchor_cell = (LOCATOR_WINDOW.size - 1) / 2 - LOCATOR_WINDOW.offset_mm[0] / LOCATOR_WINDOW.mm_per_px
    assert top[0] * STRIDE <= anchor_cell + 3 * 12 / LOCATOR_WINDOW.mm_per_px  # at most ~two discs lower


def test_a_second_generator_window_has_its_labelled_discs_in_order_down_the_neck() -> None:
    from detector.altgen import make_study

    rng = np.random.default_rng([5, 2])
    window, target = draw_other_window(rng, augment=False)
    assert window.shape == (1, LOCATOR_WINDOW.size, LOCATOR_WINDOW.size) and float(window.std()) > 0
    torch.testing.assert_close(target.sum(dim=1), torch.ones(N_DISC_LEVELS))
    shown = target[:, -1] < 0.5
    assert shown[0] and shown.sum() >= 4  # a midline slice of a whole neck shows C2-C3 and most below
    rows = [divmod(int(t[:-1].argmax()), LOCATOR_WINDOW.size // STRIDE)[0] for t in target[shown]]
    assert rows == sorted(rows) and rows[-1] > rows[0]
    # the targets sit on the study's disc boxes: the same draw, replayed, is that study
    again = np.random.default_rng([5, 2])
    d = float(again.uniform(-3.0, 3.0))
    study = make_study(int(again.integers(2**31)), bool(again.random() < 0.5), positions=(d,))
    assert sum(0 in disc.boxes for disc in study.discs) == int(shown.sum())


def test_the_share_of_second_generator_windows_leaves_the_other_draws_unchanged_at_zero() -> None:
    a, ta = draw_windows((7,), 3, augment=False)
    b, tb = draw_windows((7,), 3, augment=False, other_generator=0.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta, tb)
    c, tc = draw_windows((7,), 3, augment=False, other_generator=1.0)
    assert c.shape == a.shape and not torch.equal(c, a)
    torch.testing.assert_close(tc.sum(dim=2), torch.ones(3, N_DISC_LEVELS))


def test_disc_points_run_down_the_spine() -> None:
    from detector.data.synthetic import study_renderer

    spine, _ = study_renderer(np.random.default_rng(3), False, 256)
    rows = disc_points(spine)[:, 0]
    assert np.all(np.diff(rows) > 0)


def test_the_locator_round_trips_through_the_checkpoint_dict() -> None:
    models = DiscModels.new()
    models.locator = LevelLocator(16)
    models.eval()
    x = torch.rand(1, 1, LOCATOR_WINDOW.size, LOCATOR_WINDOW.size)
    again = DiscModels.from_payload(models.to_payload(half=False))
    assert again.locator is not None
    for before, after in zip(models.locator(x), again.locator(x)):
        torch.testing.assert_close(before, after)
    assert log_distribution(*again.locator(x)).shape == (1, N_DISC_LEVELS, (LOCATOR_WINDOW.size // STRIDE) ** 2 + 1)
    assert DiscModels.from_payload(DiscModels.new().to_payload()).locator is None


def test_train_locator_then_calibrate_installs_it_and_the_analysis_uses_it(tmp_path) -> None:
    from typer.testing import CliRunner

    import dicom_node.cli.calibrate  # noqa: F401  (registers the commands)
    import dicom_node.cli.discs  # noqa: F401
    from detector import checkpoint
    from detector.analysis import Analyzer
    from detector.data.synthetic import make_study
    from dicom_node.cli import app

    torch.set_num_threads(1)
    runner = CliRunner()
    trained = runner.invoke(
        app,
        [
            *("train-locator", "--out", str(tmp_path / "loc"), "--epochs", "1"),
            *("--patients", "16", "--val-patients", "8", "--other-generator", "0.5"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "locator epoch 1/1" in trained.output and (tmp_path / "loc" / "locator.pt").is_file()
    out = tmp_path / "with_locator.pt"
    args = ["calibrate", "--out", str(out), "--studies", "4", "--seed", "321", "--threads", "1"]
    done = runner.invoke(app, [*args, "--locator", str(tmp_path / "loc" / "locator.pt"), "--fusion", "product"])
    assert done.exit_code == 0, done.output
    payload = checkpoint.load(out)
    assert payload["discs"]["level_fusion"] == "product" and "locator" in payload["discs"]
    analyzer = Analyzer.from_checkpoint(out, device="cpu")
    assert analyzer.discs.locator is not None and analyzer.discs.level_fusion == "product"
    study = make_study(np.random.default_rng([9300, 1]), n_slices=9)
    result = analyzer.analyze(list(study.volume), (study.pixel_spacing, study.pixel_spacing))
    assert result.findings and result.naming.status in ("found", "unknown")
    bad = runner.invoke(app, [*args, "--locator", str(out)])
    assert bad.exit_code == 2 and "not a level locator" in bad.output
    bad = runner.invoke(app, [*args, "--locator", str(tmp_path / "loc" / "locator.pt"), "--fusion", "max"])
    assert bad.exit_code == 2 and "--fusion" in bad.output
    bad = runner.invoke(app, [*args, "--fusion", "mean"])  # a fusion with no locator to fuse
    assert bad.exit_code == 2 and "only with --locator" in bad.output


def test_the_version_follows_the_locator_and_its_fusion_and_ignores_the_fusion_without_one() -> None:
    from detector import SHIPPED_CHECKPOINT, checkpoint

    payload = checkpoint.load(SHIPPED_CHECKPOINT)
    shipped = payload["discs"]
    again = checkpoint.with_second_stage(payload, {**shipped, "level_fusion": "product"})
    assert again["version"] == payload["version"]  # no locator: the fusion names nothing
    models = DiscModels.from_payload(shipped)
    models.locator = LevelLocator(16)
    versions = set()
    for how in ("product", "mean"):
        models.level_fusion = how
        versions.add(checkpoint.with_second_stage(payload, models.to_payload())["version"])
    assert len(versions) == 2 and payload["version"] not in versions
