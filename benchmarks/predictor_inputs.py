"""Which inputs make the next block's latent learnable? A plain MLP is trained on a run's latent cache
to predict the latent one action block ahead from different inputs, and scored on held-out episodes
(mean squared error on the predictor's prepared latents, next to the copy-the-last-latent baseline):

    latents            the prepared latents of the last two frames (what a predictor without proprio reads)
    latents+proprio    plus the standardised proprio (qpos, qvel) of the current frame
    latents+fourier    plus the proprio as the predictor's Fourier features (`proprio_features`)
    fourier            the Fourier features alone, no latents

Every input also gets the block's actions. The latents are prepared with the run's trained predictor
(its PCA basis and proprio statistics), so the figures are on the scale of `jepa-agent diagnose`.
Prints a table and writes JSON (docs/experiments.md section 8).

    python -m benchmarks.predictor_inputs runs/reacher
    python -m benchmarks.predictor_inputs runs/reacher --steps 2000 --kinds latents fourier --output /tmp/inputs.json
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.arguments import benchmark_parser, non_negative_int, positive_int, run_main
from bookkeeping.io import atomic_write_json
from world_model.latent_cache import LatentCache
from world_model.predictor import load_predictor

KINDS = ("latents", "latents+proprio", "latents+fourier", "fourier")


def load_split(cache: LatentCache, model) -> dict[str, torch.Tensor]:
    """A cache split -> prepared latents (E, T+1, D'), actions (E, T, A), standardised proprio (E, T+1, P)."""
    with torch.no_grad():
        latents = torch.cat([model.prepare_latents(torch.from_numpy(np.array(cache.latents[start : start + 100])))
                             for start in range(0, len(cache), 100)])[..., 0, :]  # (E, T+1, D'): one flat token
        proprio = torch.from_numpy(np.array(cache.proprio, dtype=np.float32))  # (E, T+1, P)
        if model.config.proprio_dim:
            proprio = model.prepare_proprio(proprio)
        else:
            proprio = (proprio - proprio.flatten(0, 1).mean(0)) / proprio.flatten(0, 1).std(0).clamp_min(1e-3)
    return {"latents": latents, "actions": torch.from_numpy(np.array(cache.actions, dtype=np.float32)),
            "proprio": proprio}


def inputs(kind: str, data: dict, episodes: torch.Tensor, steps: torch.Tensor, block: int, fourier):
    """Windows (episode, step t) -> (inputs (M, X), target latents at t + block (M, D')); `fourier` maps
    proprio (M, P) to its Fourier features."""
    latents, proprio = data["latents"], data["proprio"]
    parts = []
    if kind.startswith("latents"):
        parts += [latents[episodes, steps - block], latents[episodes, steps]]
    if kind.endswith("+proprio"):
        parts.append(proprio[episodes, steps])
    if kind.endswith("fourier"):
        parts.append(fourier(proprio[episodes, steps]))
    parts.append(data["actions"][episodes[:, None], steps[:, None] + torch.arange(block)].flatten(1))  # (M, block*A)
    return torch.cat(parts, dim=-1), latents[episodes, steps + block]


def draw_windows(data: dict, count: int, block: int, generator: torch.Generator | None = None):
    """Random windows -> (episodes (M,), steps t (M,)) with frames t - block, t, t + block in the episode."""
    episodes, length = data["latents"].shape[0], data["latents"].shape[1] - 1
    return (torch.randint(0, episodes, (count,), generator=generator),
            torch.randint(block, length - block + 1, (count,), generator=generator))


def fit_and_score(kind: str, train: dict, held_out: dict, block: int, fourier, steps: int, width: int,
                  seed: int) -> dict:
    torch.manual_seed(seed)
    input_width = inputs(kind, train, *draw_windows(train, 1, block), block, fourier)[0].shape[-1]
    mlp = nn.Sequential(nn.Linear(input_width, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                        nn.Linear(width, width), nn.GELU(), nn.Linear(width, train["latents"].shape[-1]))
    optimizer = torch.optim.AdamW(mlp.parameters(), 1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=max(0.05, 2 / steps))
    started = time.perf_counter()
    for _ in range(steps):
        features, target = inputs(kind, train, *draw_windows(train, 256, block), block, fourier)
        loss = (mlp(features) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    generator = torch.Generator().manual_seed(seed + 1)
    held_episodes, held_steps = draw_windows(held_out, 4000, block, generator)
    with torch.no_grad():
        features, target = inputs(kind, held_out, held_episodes, held_steps, block, fourier)
        copy_last = F.mse_loss(held_out["latents"][held_episodes, held_steps], target).item()
        return {"kind": kind, "mse": F.mse_loss(mlp(features), target).item(), "copy_last_mse": copy_last,
                "train_episodes": train["latents"].shape[0], "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--predictor", type=Path, default=None, help="default: RUN_DIR/predictor")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--steps", type=positive_int, default=8000, help="MLP training steps (batch 256)")
    parser.add_argument("--width", type=positive_int, default=768)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    predictor_dir = args.predictor or args.run_dir / "predictor"
    model, _ = load_predictor(predictor_dir)
    if not model.config.flatten_grid:
        raise ValueError(f"{predictor_dir} has {model.config.tokens} tokens per frame; this study "
                         "expects the flattened layout (predictor.flatten_grid=true)")
    train = load_split(LatentCache(args.run_dir / "latents" / "train"), model)
    held_out = load_split(LatentCache(args.run_dir / "latents" / "val"), model)
    rows = [fit_and_score(kind, train, held_out, model.config.block, model.proprio_features, args.steps, args.width,
                          args.seed) for kind in args.kinds]
    print(f"{'inputs (+ actions)':18} {'held-out MSE':>13} {'copy-last':>10}")
    for row in rows:
        print(f"{row['kind']:18} {row['mse']:13.3f} {row['copy_last_mse']:10.3f}")
    report = {"run_dir": str(args.run_dir), "predictor": str(predictor_dir), "steps": args.steps, "width": args.width,
              "frequencies": model.config.proprio_frequencies, "rows": rows}
    atomic_write_json(args.output or Path(__file__).parent / "results" / "predictor_inputs.json", report)
    return report


if __name__ == "__main__":
    run_main(main)
