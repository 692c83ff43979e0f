"""How far can the encoder's latent energy alone lead the planner? Goal reaching where the true
simulator replaces the predictor: each candidate is simulated exactly, its frame at the end of the
window is rendered and encoded, and its energy is the distance of that latent to the goal image's
latent (the latent agent's pooling and L2, on the full pooled grid without the PCA, so that the
two encoders are compared on equal terms). What this reaches is the ceiling of the
encoder's energy under this planner; the gap to it is the predictor's share of the error, the gap
above it the encoder's. Compares the run's encoder with a random encoder of the same architecture,
on the first pairs of the run's evaluation protocol. Prints a table and writes JSON.

    python -m benchmarks.encoder_ceiling runs/reacher --pairs 20
    python -m benchmarks.encoder_ceiling runs/reacher --pairs 20 --samples 100 --iterations 10
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import envs
from agent.build import mpc_settings
from agent.run_config import load_run_config
from agent.episodes import run_batch
from agent.pairs import sample_pairs
from agent.mpc import MPCAgent
from agent.worlds import aggregate_over_blocks
from benchmarks.arguments import benchmark_parser, positive_int, run_main
from envs.dataset import EpisodeStore
from bookkeeping.io import atomic_write_json
from planners import make_planner
from world_model.energy import latent_distance
from world_model.latent_cache import load_stage_encoder
from world_model.encoder import random_encoder
from world_model.predictor import pool_token_grid


class RenderedLatentWorld:
    """World for MPCAgent: true simulator dynamics, energy = latent distance of rendered end frames."""

    def __init__(self, task, encoder, pool_grid: int, block: int, aggregate: str = "last"):
        self.task, self.encoder, self.pool_grid = task, encoder, pool_grid
        self.block, self.aggregate = block, aggregate
        self.goal_latents = self.states = None
        self.state_dim = task.nq + task.nv  # S: (qpos, qvel)

    def embed(self, images: np.ndarray) -> torch.Tensor:
        pooled = pool_token_grid(self.encoder.encode_images(images), self.pool_grid).flatten(-3)  # (B, k*k*D)
        return F.layer_norm(pooled, pooled.shape[-1:]).unsqueeze(1)  # (B, 1, k*k*D)

    def check_frames(self, images) -> None:
        """It renders its own frames, at the task's size: any observation size."""

    def set_goal(self, goal_images: np.ndarray, goal_states=None) -> None:
        self.goal_latents = self.embed(goal_images)

    def observe(self, pixels, states: np.ndarray, executed_block=None) -> None:
        self.states = np.asarray(states, dtype=np.float64)

    def energy_fn(self, blocks: int | None = None):
        states, goals = self.states, self.goal_latents
        action_dim = self.task.action_space.shape[0]
        substeps = self.block * self.task.action_repeat
        chosen_blocks = [-1] if self.aggregate == "last" else None  # render only the frames that count

        @torch.no_grad()
        def energy(actions: torch.Tensor) -> torch.Tensor:
            actions = actions[:, :, :blocks]  # (B, K, H', block*A): the window may end early (shrink_horizon)
            batch, samples, horizon, _ = actions.shape
            step_actions = actions.cpu().double().numpy().reshape(batch * samples, horizon * self.block, action_dim)
            trajectory = self.task.simulate(np.repeat(states, samples, axis=0), step_actions)
            block_ends = trajectory[:, substeps - 1 :: substeps]  # (B*K, H, S)
            chosen = block_ends[:, chosen_blocks] if chosen_blocks else block_ends  # (B*K, H'', S)
            images = np.stack([self.task.render_goal(state) for state in chosen.reshape(-1, chosen.shape[-1])])
            latents = self.embed(images).view(batch, samples, chosen.shape[1], *goals.shape[1:])  # (B, K, H', N, D')
            distances = latent_distance(latents, goals[:, None, None], "l2")  # (B, K, H')
            return aggregate_over_blocks(distances, "last" if chosen_blocks else self.aggregate)

        return energy


def evaluate(cfg, encoder, pairs, samples: int, iterations: int) -> dict:
    tasks = [envs.make_from_config(cfg.env) for _ in pairs]
    planner_cfg = OmegaConf.merge(cfg.planner, {"samples": samples, "iterations": iterations,
                                                "top_k": max(2, samples // 10)})
    action_dim = tasks[0].action_space.shape[0]
    block = int(cfg.predictor.block)
    world = RenderedLatentWorld(envs.make_from_config(cfg.env), encoder, int(cfg.predictor.pool_grid), block,
                                cfg.evaluate.energy.aggregate)
    planner = make_planner(planner_cfg, block * action_dim)
    execute_blocks, shrink_horizon = mpc_settings(cfg.mpc, planner.horizon)
    agent = MPCAgent(world, planner, block, action_dim, execute_blocks, shrink_horizon=shrink_horizon)
    started = time.perf_counter()
    records = run_batch(agent, tasks, pairs, cfg.evaluate.budget, list(range(len(pairs))), [False] * len(pairs))
    for task in [*tasks, world.task]:
        task.close()
    return {"success_rate": float(np.mean([r["success"] for r in records])),
            "mean_min_distance": float(np.mean([r["min_distance"] for r in records])),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pairs", type=positive_int, default=20)
    parser.add_argument("--samples", type=positive_int, default=100)
    parser.add_argument("--iterations", type=positive_int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    cfg = load_run_config(args.run_dir)
    torch.set_num_threads(int(cfg.get("threads") or torch.get_num_threads()))
    task = envs.make_from_config(cfg.env)
    pairs, _ = sample_pairs(EpisodeStore(Path(cfg.paths.dataset) / "eval"), task, args.pairs,
                            cfg.evaluate.goal_offset, cfg.evaluate.seeds[0], cfg.evaluate.get("exclude_within", 0.0))
    task.close()
    encoder = load_stage_encoder(cfg)
    baseline = random_encoder(encoder.config, 0, "cpu", encoder.autocast_bf16, encoder.chunk_size)
    results = {"run_dir": str(args.run_dir), "pairs": args.pairs, "samples": args.samples,
               "iterations": args.iterations, "aggregate": cfg.evaluate.energy.aggregate}
    for name, model in (("encoder", encoder), ("random_encoder", baseline)):
        results[name] = evaluate(cfg, model, pairs, args.samples, args.iterations)
        print(f"{name:15} success {results[name]['success_rate']:.0%}  mean min distance "
              f"{results[name]['mean_min_distance']:.3f}  ({results[name]['seconds']} s)")
    atomic_write_json(args.output or args.run_dir / "encoder_ceiling.json", results)
    return results


if __name__ == "__main__":
    run_main(main)
