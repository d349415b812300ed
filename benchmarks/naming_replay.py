"""Replay naming rules on cached level probabilities: a naming rule judged in seconds, not hours.

    python benchmarks/naming_replay.py cache --out DIR [--studies 100] [--seed 9700]
        [--checkpoint CKPT] [--discs BEST_PT] [--looks widen,bones,random,altgen]
    python benchmarks/naming_replay.py replay DIR [--level-weight 0,0.5,1] [--min-margin 1.5]
        [--member all|0|1|MIX]

``cache`` runs the detector and the level net(s) once on the development studies of
``benchmarks/naming_dev.py`` (same looks, seeds and truth) and writes, per look, a JSON file of
every study's chain: the [L, 8] level log-probabilities of the shipped combination and of each
member of a level ensemble, and the true level under each position's detections (``"empty"``
where the chain was extended and nothing was detected; null where the boxes sit on no disc).
``replay`` names those chains with the cached model's stored naming rule
(``detector.naming.NamingRule``), its level weight and margin set to each combination of the
given values, and prints, per look, studies named / reported levels / error share (wrong
names and positions on no disc over reported) / shifted chains. ``--member`` replays one
member of the ensemble, or a mix (e.g. 0.7: that weight on the last member).

The counts are of chain positions, not findings: a position's truth is the most common level
under its detections, where ``naming_dev.py`` takes the key slice's box of the herniation
call. On 6ba6 the studies named agree in every look (widened 95, bones 94, random 77, altgen
49) and the reported levels nearly (562 both ways widened, 437 here against 451 in the random
look); a rule is chosen here and then confirmed with ``candidate_rule.py`` on the real runs.
The held-out generator is never cached here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/detector.py would shadow the package: this folder goes last, for naming_dev only
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).resolve().parent))

from naming_dev import dev_study, tally  # noqa: E402

from detector.naming import UNSTORED_RULE, Naming, NamingRule  # noqa: E402

#: look name -> naming_dev's (generator, look, anatomy)
LOOKS = {
    "widen": ("ours", "generator", "widen"),
    "bones": ("ours", "generator", "bones"),
    "random": ("ours", "random", "widen"),
    "altgen": ("altgen", "generator", "widen"),
}
EMPTY = "empty"


def chain_truth(study: Any, members: Sequence[Sequence[Any]]) -> list[str | None]:
    """Per chain position, the most common true level under its detections; ``EMPTY`` where
    nothing was detected, None where no detection sits on a disc."""
    out: list[str | None] = []
    for discs in members:
        seen = Counter(t for d in discs if (t := study.level_under(d.slice_index, d.box)) is not None)
        out.append(EMPTY if not discs else seen.most_common(1)[0][0] if seen else None)
    return out


def replay(chains: list[dict[str, Any]], namer: Callable[[np.ndarray], Naming], member: str = "all") -> Counter[str]:
    """Name every cached chain with ``namer`` and tally it as ``naming_dev.py`` does."""
    counts: Counter[str] = Counter()
    for chain in chains:
        counts["studies"] += 1
        if chain["log_probs"] is None:
            counts["unknown"] += 1
            continue
        naming = namer(_log_probs(chain, member))
        counts["named" if naming.status == "found" else "unknown"] += 1
        # an unknown chain's names are all None, which tally leaves out
        tally(counts, [(n, t) for n, t in zip(naming.names, chain["truth"]) if t != EMPTY])
    return counts


def _log_probs(chain: dict[str, Any], member: str) -> np.ndarray:
    if member == "all":
        return np.asarray(chain["log_probs"])
    members = [np.exp(np.asarray(m)) for m in chain["members"]]
    if not members:
        raise ValueError("--member: the cached level net is not an ensemble")
    if member.isdigit():
        return np.log(members[int(member)])
    w = float(member)
    return np.log(np.clip((1 - w) * members[0] + w * members[-1], 1e-9, None))


def error_share(counts: Counter[str]) -> float:
    return (counts["wrong"] + counts["on no disc"]) / max(counts["reported"], 1)


def cache(args: argparse.Namespace) -> None:
    import torch

    from detector.analysis import Analyzer, extend_chain
    from detector.discs.model import DiscModels
    from detector.levels import disc_chain

    torch.set_num_threads(1)
    discs = DiscModels.load(args.discs) if args.discs else None
    analyzer = Analyzer.from_checkpoint(args.checkpoint, device="cpu", discs=discs)
    # each member of a level ensemble read alone, beside the ensemble
    alone = [
        Analyzer(analyzer.detector, replace(analyzer.discs, level=net), analyzer.version, analyzer.level_views)
        for net in getattr(analyzer.discs.level, "members", [])
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    for look in args.looks.split(","):
        chains = []
        for i in range(args.studies):
            study, spacing = dev_study(*LOOKS[look], args.seed, i)
            found = disc_chain(analyzer.detector.predict(list(study.volume)))
            if found is None:
                chains.append({"log_probs": None, "members": [], "truth": []})
                continue
            volume = torch.from_numpy(np.stack([np.asarray(im, np.float32) for im in study.volume]))
            chain = extend_chain(found, volume.shape[1:])
            members = [a.level_log_probs(volume, spacing, chain).round(5).tolist() for a in alone]
            lp = analyzer.level_log_probs(volume, spacing, chain)
            chains.append(
                {"log_probs": lp.round(5).tolist(), "members": members, "truth": chain_truth(study, chain.members)}
            )
            print(f"{look} {i + 1}/{args.studies}", file=sys.stderr, flush=True)
        meta = {
            "model": analyzer.version,
            "naming": analyzer.discs.naming.to_dict(),
            "look": look,
            "seed": args.seed,
            "studies": args.studies,
        }
        (args.out / f"{look}.json").write_text(json.dumps({**meta, "chains": chains}))


def replay_cmd(args: argparse.Namespace) -> None:
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(args.cache.glob("*.json"))}
    if not runs:
        raise SystemExit(f"{args.cache}: no cached looks (run `cache` first)")
    weights = [float(w) for w in args.level_weight.split(",")]
    margins = [float(m) for m in args.min_margin.split(",")]
    print(f"model {next(iter(runs.values()))['model']}; per look: named / reported / error share / shifted")
    for w, m in itertools.product(weights, margins):
        row = [f"level_weight {w:.2f} min_margin {m:.2f}"]
        for look, run in runs.items():
            stored = NamingRule.from_dict(run["naming"]) if "naming" in run else UNSTORED_RULE  # older caches
            c = replay(run["chains"], replace(stored, min_margin=m, level_weight=w), args.member)
            row.append(f"{look} {c['named']} / {c['reported']} / {error_share(c):.3f} / {c['shifted chains']}")
        print(" | ".join(row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="run the nets once and cache the chains' level log-probabilities")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--studies", type=int, default=100)
    c.add_argument("--seed", type=int, default=9700)
    c.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    c.add_argument("--discs", default=None, help="a second stage (best.pt of `meddet train-discs`) to use instead")
    c.add_argument("--looks", default=",".join(LOOKS))
    r = sub.add_parser("replay", help="name the cached chains with each parameter combination")
    r.add_argument("cache", type=Path)
    r.add_argument("--level-weight", default="0,0.5,1", help="comma-separated values")
    r.add_argument("--min-margin", default="1.5", help="comma-separated values")
    r.add_argument("--member", default="all", help="all, a member's index, or a weight on the last member")
    args = ap.parse_args(argv)
    if args.command == "cache":
        unknown = set(args.looks.split(",")) - set(LOOKS)
        if unknown:
            ap.error(f"--looks: unknown {sorted(unknown)}; choose from {', '.join(LOOKS)}")
        cache(args)
    else:
        replay_cmd(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
