"""MedDet distillation experiments on the synthetic hard benchmark (issue 8).

    python -m benchmarks.distill_experiments --out runs/distill      # all stages, resumable
    python -m benchmarks.distill_experiments --out runs/distill --report-only

Stages (each run's result is a JSON file in --out, so a re-run skips what is done):
  teachers   three small ResNet GFL teachers trained on the synthetic hard set
  main       undistilled student, MedDet student (3 teachers, LWFF, AATM, nmODE² in the head)
  ablation   distil base (sum fusion, no nmODE², no AATM) -> +nmODE² -> +LWFF -> +AATM
  placement  nmODE² in head / FPN / backbone (full MedDet otherwise)
  fusion     LWFF vs sum vs concat (full MedDet otherwise)
  kd         single-teacher feature-MSE KD baseline
  noise      mAP50 under added Rician noise, undistilled vs MedDet student
  speed      params, GMACs and CPU latency at 512x512 of the paper-config models (random
             weights; accuracy needs training we cannot afford here) and of ours, one run,
             interleaved rounds, as ratios to the R50 teacher; nmODE² cost vs the same student
Writes docs/results.md and docs/figures/*.png from the JSON files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.config import DetectorConfig, load_config
from detector.data.synthetic import SyntheticSliceDataset
from detector.distill.config import DistillConfig
from detector.distill.trainer import GFL, distill, load_teacher
from detector.evaluate import evaluate_model
from detector.flops import count_macs, count_params
from detector.models import build_detector
from detector.train import train

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {  # name -> (base config, backbone changes): three small ResNets of half width
    "T-R10s": ("teacher_r18_small", {"layers": [1, 1, 1, 1]}),
    "T-R18s": ("teacher_r18_small", {}),
    "T-R50s": ("teacher_r50_small", {}),
}
MEDDET = DistillConfig(student="student", fusion="lwff", adversarial=True, ode="head", cache="memory")
NOISE = (0.0, 0.05, 0.1, 0.15, 0.2)


def sized(cfg: DetectorConfig, a: argparse.Namespace, epochs: int) -> DetectorConfig:
    return cfg.replace(
        preprocess={"size": a.size},
        head={"ode_steps": a.ode_steps},
        train={
            "epochs": epochs,
            "batch_size": a.batch,
            "augment": False,
            "seed": a.seed,
            "num_threads": a.threads,
            "warmup_iters": 20,
        },
    )


def data(a: argparse.Namespace) -> tuple[Any, Any]:
    return (
        SyntheticSliceDataset(a.train_images, seed=1000 + a.seed, hard=True),
        SyntheticSliceDataset(a.test_images, seed=9000, hard=True),
    )


def scores(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in ("map50", "map", "recall50")}


def cached(out: Path, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    path = out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.time()
    res = fn()
    res["train_s"] = round(time.time() - t0, 1)
    path.write_text(json.dumps(res, indent=2))
    print(f"[{name}] {json.dumps({k: v for k, v in res.items() if k != 'history'})}", flush=True)
    return res


def complexity(model: torch.nn.Module, size: int) -> dict[str, float]:
    return {
        "params_m": count_params(model) / 1e6,
        "gmacs": count_macs(model, size, model.cfg.backbone.in_channels) / 1e9,
    }


def teachers(a: argparse.Namespace, out: Path) -> list[tuple[GFL, str]]:
    tr, te = data(a)
    loaded = []
    for name, (base, bb) in TEACHERS.items():
        cfg = sized(load_config(base).replace(backbone=bb), a, a.teacher_epochs)
        run = out / "ckpt" / name

        def fit() -> dict[str, Any]:
            res = train(cfg, tr, None, run, config_name=name, progress=False)  # noqa: B023 (cached() calls fit now)
            model, _ = load_teacher(res.last)  # type: ignore[arg-type]
            return {
                "name": name,  # noqa: B023
                **scores(evaluate_model(model, te, cfg.preprocess)),  # noqa: B023
                **complexity(model, a.size),
                "history": res.history,
            }

        cached(out, f"teacher_{name}", fit)
        loaded.append(load_teacher(run / "last.pt"))
    return loaded


def student_run(
    a: argparse.Namespace, out: Path, name: str, dcfg: DistillConfig | None, tset: list[tuple[GFL, str]]
) -> dict[str, Any]:
    """``dcfg`` None: the undistilled student (plain training, same steps, data and seed)."""
    tr, te = data(a)
    cfg = sized(load_config("student"), a, a.student_epochs).replace(train={"seed": a.student_seed})
    if a.student_seed != a.seed:  # extra repeats: same data and teachers, another student seed
        name = f"{name}_s{a.student_seed}"

    def fit() -> dict[str, Any]:
        run = out / "ckpt" / name
        if dcfg is None:
            res = train(cfg, tr, None, run, config_name=name, progress=False)
            model, _ = load_teacher(res.last)  # type: ignore[arg-type]
            history = res.history
        else:
            r = distill(
                dcfg,
                cfg,
                [t for t, _ in tset],
                tr,
                None,
                run,
                config_name=name,
                teacher_versions=[v for _, v in tset],
                progress=False,
            )
            model, history = r.model, r.history  # type: ignore[assignment]
        return {
            "name": name,
            "distill": dcfg.to_dict() if dcfg else None,
            **scores(evaluate_model(model, te, cfg.preprocess)),
            **complexity(model, a.size),
            "history": history,
        }

    return cached(out, f"student_{name}", fit)


def add_rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Extra Rician noise with std ``sigma`` x the image's 99th percentile."""
    s = sigma * float(np.percentile(image, 99))
    return np.sqrt((image + rng.normal(0, s, image.shape)) ** 2 + rng.normal(0, s, image.shape) ** 2).astype(np.float32)


class Noisy:
    def __init__(self, base: Any, sigma: float) -> None:
        self.base, self.sigma = base, sigma

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        image, target = self.base[i]
        return add_rician(image, self.sigma, np.random.default_rng([77, i])), target


def noise_stage(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        _, te = data(a)
        res: dict[str, Any] = {"sigma": list(NOISE)}
        for name in ("undistilled", "meddet"):
            model, _ = load_teacher(out / "ckpt" / name / ("student.pt" if name == "meddet" else "last.pt"))
            pre = model.cfg.preprocess
            res[name] = [evaluate_model(model.eval(), Noisy(te, s), pre)["map50"] for s in NOISE]
        return res

    return cached(out, "noise", run)


def latency(models: dict[str, torch.nn.Module], size: int, rounds: int) -> dict[str, float]:
    """Median seconds per [1, C, size, size] forward, interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        xs = {k: torch.rand(1, m.cfg.backbone.in_channels, size, size) for k, m in models.items()}
        for k, m in models.items():
            m.eval()(xs[k])
        for _ in range(rounds):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(xs[k])
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def speed_stage(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        student = load_config("student")
        ours = {f"{k} (ours)": load_config(b).replace(backbone=bb) for k, (b, bb) in TEACHERS.items()}
        cfgs = {
            **ours,
            "GFL R152 (paper teacher)": load_config("teacher_r152"),
            "GFL R101 (paper teacher)": load_config("teacher_r101"),
            "GFL R50 (paper teacher)": load_config("teacher_r50"),
            "paper student (MBv2, FPN 256, 4+4)": load_config("student_paper"),
            "our student, no nmODE²": student,
            f"our student + nmODE² (rk4 x{a.ode_steps})": student.replace(
                head={"ode": "nmode2", "ode_steps": a.ode_steps}
            ),
        }
        models = {k: build_detector(c.replace(preprocess={"size": 512})) for k, c in cfgs.items()}
        res: dict[str, Any] = {"size": 512, "threads": torch.get_num_threads(), "rows": {}}
        lat = latency(models, 512, a.rounds)
        for k, m in models.items():
            res["rows"][k] = {**complexity(m, 512), "latency_s": lat[k]}
        ode = {f"rk4 x{s}": student.replace(head={"ode": "nmode2", "ode_steps": s}) for s in (1, 2, 4)}
        ode_models = {"none": build_detector(student), **{k: build_detector(c) for k, c in ode.items()}}
        res["nmode_256"] = latency(ode_models, 256, 4 * a.rounds)  # small models: more rounds
        res["nmode_512"] = latency(ode_models, 512, 4 * a.rounds)
        return res

    return cached(out, "speed", run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "distill")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train-images", type=int, default=192)
    p.add_argument("--test-images", type=int, default=120)
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--student-epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--ode-steps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student-seed", type=int, default=None, help="students' seed (default --seed): repeats")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--stages", default="teachers,main,noise,speed,kd,ablation,fusion,placement")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    a.student_seed = a.seed if a.student_seed is None else a.student_seed
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    if a.student_seed == a.seed:
        (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}, indent=2))
    stages = a.stages.split(",")
    if not a.report_only:
        tset = teachers(a, a.out)
        runs: dict[str, list[tuple[str, DistillConfig | None]]] = {
            "main": [("undistilled", None), ("meddet", MEDDET)],
            "ablation": [
                ("abl_base", MEDDET.replace(fusion="sum", ode="none", adversarial=False)),
                ("abl_ode", MEDDET.replace(fusion="sum", adversarial=False)),
                ("abl_ode_lwff", MEDDET.replace(adversarial=False)),
            ],
            "placement": [("place_fpn", MEDDET.replace(ode="fpn")), ("place_backbone", MEDDET.replace(ode="backbone"))],
            "fusion": [("fuse_sum", MEDDET.replace(fusion="sum")), ("fuse_concat", MEDDET.replace(fusion="concat"))],
            # plain feature-MSE KD: one teacher, its FPN through a fixed 1x1 projection, no extras
            "kd": [("kd_single_r50", MEDDET.replace(fusion="sum", ode="none", adversarial=False, gamma=0.0))],
        }
        for stage in stages:
            if stage in runs:
                for name, dcfg in runs[stage]:
                    ts = tset[2:] if name.startswith("kd_single") else tset
                    student_run(a, a.out, name, dcfg, ts)
            elif stage == "noise":
                noise_stage(a, a.out)
            elif stage == "speed":
                speed_stage(a, a.out)
    from benchmarks.distill_report import write_report

    write_report(a.out, ROOT / "docs")


if __name__ == "__main__":
    main()
