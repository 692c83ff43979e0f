"""World-model diagnostics (`jepa-agent diagnose`): does the predictor beat copying, and does it use the action?

On held-out episodes of the latent cache (`diagnose.split`), with the planning distance of
`world_model.energy` on prepared latents:
  rollout error vs horizon   open-loop rollouts of the true actions from C true frames, against the
                             copy-the-last-latent baseline (`rollout_error.png`);
  retrieval                  for held-out transitions, the rank of the true next latent among the next
                             latents of all the transitions, given the true action and given another
                             transition's action: mean reciprocal rank, as in the Image World Models
                             paper (`retrieval.png`);
  energy landscape           distance to the true next latent over a 2-D grid of first action blocks
                             offset (on action dims 0 and 1) around the true one (`energy_landscape.png`);
  object readout             with a latent readout beside the predictor (the cube): how far the positions it
                             reads from the rollouts lie from the true ones, against copying the last true
                             position and against reading the true latents, over all windows and over those
                             where the object moves (`object_readout.png`): does the predictor carry the object?
  goal positions             with a position readout beside the predictor: how far from the true positions the
                             readout and the nearest training frames (`evaluate.energy.goal_neighbours`,
                             world_model/nearest_frames.py) place `diagnose.goal_frames` held-out frames, the largest
                             error over the positions (`goal_positions.png`): can the energy's goal be trusted?
Writes `diagnostics.json` and the PNGs to `diagnose.output_dir` (default `run_dir/diagnostics`).
`run_dir=DIR` finds the predictor and cache of a pipeline run; `paths.predictor` / `paths.latents`
may point elsewhere.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from bookkeeping.checks import check_ints, check_numbers, is_int
from bookkeeping.io import atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir, read_json
from world_model.device import bf16_autocast, resolve_device
from world_model.energy import latent_distance
from world_model.latent_cache import LatentCache
from world_model.latent_readout import META_FILE as LATENT_READOUT_META, load_latent_readout
from world_model.nearest_frames import NearestFramePositions
from world_model.position_readout import META_FILE as POSITION_READOUT_META, load_position_readout, random_frames
from world_model.predictor import Predictor, load_predictor
from world_model.windows import WindowData


def check_cache_matches(meta: dict, cache: LatentCache) -> None:
    """A one-line error when the cache was not made for this predictor, naming what differs."""
    made_for = {"latent width": meta["cache_dim"], "latent grid": meta["cache_grid"],
                "action dim": meta["action_dim"], "encoder fingerprint": meta["encoder_fingerprint"]}
    found = {"latent width": cache.dim, "latent grid": cache.grid, "action dim": cache.action_dim,
             "encoder fingerprint": cache.fingerprint}
    for what, expected in made_for.items():
        if found[what] != expected:
            raise ValueError(f"{what} mismatch: the predictor has {expected!r} but latent cache "
                             f"{str(cache.split_dir)!r} has {found[what]!r}")


def sample_windows(data: WindowData, count: int, seed: int, stride: int = 1) -> torch.Tensor:
    """Up to `count` (episode, start) windows with starts on a multiple of `stride`, seeded."""
    windows = data.windows[data.windows[:, 1] % stride == 0]
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))
    return windows[order[:count]]


@torch.no_grad()
def rollout_error(model: Predictor, data: WindowData, windows, horizon: int, norm: str, device) -> dict:
    context = model.config.context_frames
    latents, actions, proprio = data.batch(windows, device)  # (B, C+H, N, D'), (B, C+H-1, block*A)
    predicted = model.rollout(latents[:, :context], actions[:, context - 1 : context - 1 + horizon],
                              actions[:, : context - 1], context_proprio(proprio, context)).float()  # (B, H, N, D')
    truth = latents[:, context : context + horizon]  # (B, H, N, D')
    model_error = latent_distance(predicted, truth, norm).mean(0)  # (H,)
    copy_error = latent_distance(latents[:, context - 1 : context], truth, norm).mean(0)  # (H,)
    return {"horizon_blocks": list(range(1, horizon + 1)), "model": model_error.tolist(),
            "copy_last": copy_error.tolist(), "windows": len(windows),
            "beats_copy_last": bool((model_error < copy_error).all())}


@torch.no_grad()
def object_readout_error(model: Predictor, readout, data: WindowData, qpos: np.ndarray, windows, horizon: int,
                         moving_threshold: float, device) -> dict:
    """Median distance (task units) between the positions `readout` reads from open-loop rollouts and the
    true ones, per horizon block; beside copying the last context frame's true position, and the readout
    of the true future latents (its own error). qpos (E, T+1, nq) of the cache's episodes. `moving`: the
    windows where the object ends more than `moving_threshold` away from where it started."""
    context, block = model.config.context_frames, model.config.block
    latents, actions, proprio = data.batch(windows, device)
    predicted = model.rollout(latents[:, :context], actions[:, context - 1 : context - 1 + horizon],
                              actions[:, : context - 1], context_proprio(proprio, context)).float()  # (B, H, N, D')
    frames = windows[:, 1:] + block * torch.arange(context + horizon)  # (B, C+H)
    indices = list(readout.config.qpos_indices)
    true = torch.from_numpy(np.asarray(qpos[windows[:, 0].numpy()[:, None], frames.numpy()][..., indices],
                                       dtype=np.float32))  # (B, C+H, K)
    last, future = true[:, context - 1], true[:, context:]  # (B, K), (B, H, K)
    errors = {"predictor": (readout(predicted).cpu() - future).norm(dim=-1),  # (B, H)
              "copy_last": (last[:, None] - future).norm(dim=-1),
              "readout_of_true_latents": (readout(latents[:, context:]).cpu() - future).norm(dim=-1)}
    moving = errors["copy_last"][:, -1] > moving_threshold
    return {"horizon_blocks": list(range(1, horizon + 1)), "qpos_indices": indices, "windows": len(windows),
            "moving_windows": int(moving.sum()), "moving_threshold": moving_threshold,
            "all": {name: error.median(0).values.tolist() for name, error in errors.items()},
            "moving": {name: error[moving].median(0).values.tolist() if moving.any() else None
                       for name, error in errors.items()}}


def goal_position_errors(readout, reader: NearestFramePositions, cache: LatentCache, frames: int, seed: int,
                         device) -> dict:
    """The largest position error (task units, angles wrapped) of `frames` random frames of `cache` as the position
    readout and as the nearest training frames read them: median, 90th percentile, and the quantiles to plot."""
    tokens, qpos = random_frames(cache, frames, np.random.default_rng(seed))  # (M, n, n, D), (M, nq)
    truth = qpos[:, : readout.config.positions]
    levels = np.linspace(0, 1, 21)
    results = {"frames": frames, "neighbours": reader.neighbours, "quantile_levels": levels.tolist()}
    with torch.no_grad():
        for name, read in (("readout", readout), ("nearest_frames", reader)):
            estimates = torch.cat([read(chunk.to(device)).float().cpu() for chunk in tokens.split(256)])  # (M, P)
            errors = readout.position_error(estimates, truth).abs().amax(-1).numpy()  # (M,)
            results[name] = {"median": float(np.median(errors)), "p90": float(np.quantile(errors, 0.9)),
                             "quantiles": np.quantile(errors, levels).tolist()}
    return results


def context_proprio(proprio: torch.Tensor | None, context: int) -> torch.Tensor | None:
    """The context frames' proprio (B, C, P) for predictors that read the proprio, else None."""
    return None if proprio is None else proprio[:, :context]


def reciprocal_ranks(predicted: torch.Tensor, candidates: torch.Tensor, norm: str) -> torch.Tensor:
    """predicted, candidates (M, N, D'); candidate i is the truth for prediction i -> 1 / rank (M,)."""
    flat_predicted, flat_candidates = predicted.flatten(1).float(), candidates.flatten(1).float()
    distances = torch.cdist(flat_predicted, flat_candidates, p=2 if norm == "l2" else 1)  # (M, M)
    true_distance = distances.diagonal()[:, None]  # (M, 1)
    rank = 1 + (distances < true_distance).sum(1)  # (M,)
    return 1.0 / rank.float()


@torch.no_grad()
def retrieval(model: Predictor, data: WindowData, windows, norm: str, seed: int, device) -> dict:
    context = model.config.context_frames
    latents, actions, proprio = data.batch(windows, device)  # (M, C+1, N, D'), (M, C, block*A)
    candidates = latents[:, context]  # (M, N, D') the true next latents
    shift = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))
    wrong_actions = actions[:, context - 1][shift.roll(1)][shift.argsort()]  # another transition's block
    true_next = model.rollout(latents[:, :context], actions[:, context - 1 :], actions[:, : context - 1],
                              context_proprio(proprio, context))
    wrong_next = model.rollout(latents[:, :context], wrong_actions[:, None], actions[:, : context - 1],
                               context_proprio(proprio, context))
    scores = {
        "true_action": reciprocal_ranks(true_next[:, 0], candidates, norm),
        "wrong_action": reciprocal_ranks(wrong_next[:, 0], candidates, norm),
        "copy_last": reciprocal_ranks(latents[:, context - 1], candidates, norm),
    }
    return {"transitions": len(windows), "candidates": len(windows),
            "mrr": {name: float(values.mean()) for name, values in scores.items()},
            "top1": {name: float((values == 1).float().mean()) for name, values in scores.items()},
            "uses_action": bool(scores["true_action"].mean() > scores["wrong_action"].mean())}


@torch.no_grad()
def energy_landscape(model: Predictor, data: WindowData, windows, diagnose_cfg: DictConfig, device) -> dict:
    context, block, grid = model.config.context_frames, model.config.block, diagnose_cfg.landscape_grid
    if model.config.action_dim < 2:
        return {"skipped": f"needs >= 2 action dims, the task has {model.config.action_dim}"}
    offsets = torch.linspace(-diagnose_cfg.landscape_radius, diagnose_cfg.landscape_radius, grid)  # (G,)
    offset_grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).reshape(-1, 2)  # (G*G, 2)
    latents, actions, proprio = data.batch(windows, device)  # (K, C+1, N, D'), (K, C, block*A)
    examples = []
    for index in range(len(windows)):
        true_block = actions[index, context - 1].view(block, -1)  # (block, A)
        candidate_blocks = true_block.repeat(len(offset_grid), 1, 1)  # (G*G, block, A)
        candidate_blocks[:, :, :2] += offset_grid[:, None].to(device)
        candidate_blocks = candidate_blocks.clamp(-1, 1).flatten(1)  # (G*G, block*A)
        predicted = model.rollout(  # one context row shared by the G*G candidates
            latents[index : index + 1, :context], candidate_blocks[:, None], actions[index : index + 1, : context - 1],
            context_proprio(proprio[index : index + 1] if proprio is not None else None, context))
        energy = latent_distance(predicted[:, 0], latents[index, context], diagnose_cfg.norm).view(grid, grid)
        best = int(energy.argmin())
        best_offset = offset_grid[best]
        examples.append({"window": windows[index].tolist(), "energy": energy.cpu().tolist(),
                         "argmin_offset": best_offset.tolist(), "argmin_distance": float(best_offset.norm()),
                         "energy_at_true_action": float(energy[grid // 2, grid // 2]),
                         "energy_min": float(energy.min()), "energy_median": float(energy.median())})
    cell = float(offsets[1] - offsets[0])
    distances = np.array([example["argmin_distance"] for example in examples])
    return {"offsets": offsets.tolist(), "grid_step": cell, "examples": examples,
            "mean_argmin_distance": float(distances.mean()),
            "argmin_within_one_cell": float((distances <= cell * 2**0.5 + 1e-6).mean())}


def save_figure(figure: Figure, path: Path) -> None:
    atomic_save(path, lambda temp: figure.savefig(temp, format="png", dpi=110, bbox_inches="tight"))


def plot_results(results: dict, output_dir: Path) -> None:
    rollout = results["rollout_error"]
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    axes.plot(rollout["horizon_blocks"], rollout["model"], "o-", label="predictor")
    axes.plot(rollout["horizon_blocks"], rollout["copy_last"], "s--", label="copy last latent")
    axes.set(xlabel="horizon (action blocks)", ylabel=f"latent distance ({results['norm']})",
             title="held-out rollout error")
    axes.legend()
    save_figure(figure, output_dir / "rollout_error.png")

    mrr = results["retrieval"]["mrr"]
    figure = Figure(figsize=(4.5, 3.5))
    axes = figure.subplots()
    axes.bar(["true action", "wrong action", "copy last"], [mrr["true_action"], mrr["wrong_action"], mrr["copy_last"]])
    axes.set(ylabel="mean reciprocal rank", ylim=(0, 1),
             title=f"next-latent retrieval among {results['retrieval']['candidates']}")
    save_figure(figure, output_dir / "retrieval.png")

    if "object_readout" in results:
        tracking = results["object_readout"]
        figure = Figure(figsize=(9, 3.5), layout="constrained")
        for axes, subset in zip(figure.subplots(1, 2), ("all", "moving")):
            count = tracking["windows"] if subset == "all" else tracking["moving_windows"]
            for name, style in (("predictor", "o-"), ("copy_last", "s--"), ("readout_of_true_latents", "^:")):
                if tracking[subset][name] is not None:
                    axes.plot(tracking["horizon_blocks"], tracking[subset][name], style, label=name.replace("_", " "))
            axes.set(xlabel="horizon (action blocks)", ylabel="median position error (task units)",
                     title=f"{subset} windows (n = {count})")
            axes.legend(fontsize=7)
        save_figure(figure, output_dir / "object_readout.png")

    if "goal_positions" in results:
        goal = results["goal_positions"]
        figure = Figure(figsize=(5, 3.5))
        axes = figure.subplots()
        for name, label in (("readout", "position readout"),
                            ("nearest_frames", f"{goal['neighbours']} nearest frames")):
            axes.plot(goal[name]["quantiles"], goal["quantile_levels"],
                      label=f"{label} (median {goal[name]['median']:.3g})")
        axes.set(xscale="log", xlabel="largest position error (task units)", ylabel="fraction of frames",
                 title=f"goal positions of {goal['frames']} held-out frames")
        axes.legend(fontsize=8)
        save_figure(figure, output_dir / "goal_positions.png")

    landscape = results["energy_landscape"]
    if "examples" in landscape:
        examples, extent = landscape["examples"], (landscape["offsets"][0], landscape["offsets"][-1]) * 2
        figure = Figure(figsize=(3.6 * len(examples), 3.4), layout="constrained")
        for column, (axes, example) in enumerate(zip(figure.subplots(1, len(examples), squeeze=False)[0], examples)):
            image = axes.imshow(np.array(example["energy"]).T, origin="lower", extent=extent, cmap="viridis")
            axes.plot(0, 0, "wx", markersize=10, label="true action")
            axes.plot(*example["argmin_offset"], "ro", markerfacecolor="none", markersize=10, label="minimum")
            axes.set(xlabel="offset action dim 0", ylabel="offset action dim 1" if column == 0 else None,
                     title=f"episode {example['window'][0]}")
            figure.colorbar(image, ax=axes, fraction=0.046)
        axes.legend(loc="upper right", fontsize=7)
        save_figure(figure, output_dir / "energy_landscape.png")


def main(cfg: DictConfig) -> None:
    """`jepa-agent diagnose`: write diagnostics.json and PNGs for the predictor in `cfg.paths.predictor`."""
    diagnose_cfg, device = cfg.diagnose, resolve_device(cfg.device)
    check_ints(diagnose_cfg, "diagnose", ("horizon", "rollout_windows", "retrieval_transitions", "landscape_examples",
                                          "goal_frames"))
    check_numbers(diagnose_cfg, "diagnose", ("landscape_radius",), positive=True)
    grid = diagnose_cfg.landscape_grid
    if not is_int(grid) or grid < 3 or grid % 2 == 0:
        raise ValueError(f"diagnose.landscape_grid={grid!r} is invalid; expected an odd int >= 3 (the middle point "
                         "is the true action)")
    model, meta = load_predictor(cfg.paths.predictor, device)
    cache = LatentCache(Path(cfg.paths.latents) / diagnose_cfg.split)
    check_cache_matches(meta, cache)
    context, block = model.config.context_frames, model.config.block
    horizon = min(diagnose_cfg.horizon, cache.episode_length // block - context + 1)
    if horizon < 1:
        raise ValueError(f"episodes of {cache.episode_length} steps are too short for {context} context frames "
                         f"of block {block} plus one predicted frame")
    output_dir = ensure_writable_dir(diagnose_cfg.output_dir, "diagnostics directory")
    with bf16_autocast(device, diagnose_cfg.bf16):
        rollout_data = WindowData(cache, model, context + horizon)
        step_data = WindowData(cache, model, context + 1)
        results = {
            "predictor": str(cfg.paths.predictor), "cache": str(cache.split_dir), "norm": diagnose_cfg.norm,
            "model": dataclasses.asdict(model.config), "val_loss": meta.get("val_loss"),
            "rollout_error": rollout_error(model, rollout_data, sample_windows(
                rollout_data, diagnose_cfg.rollout_windows, cfg.seed), horizon, diagnose_cfg.norm, device),
            "retrieval": retrieval(model, step_data, sample_windows(
                step_data, diagnose_cfg.retrieval_transitions, cfg.seed, stride=block), diagnose_cfg.norm,
                cfg.seed, device),
            "energy_landscape": energy_landscape(model, step_data, sample_windows(
                step_data, diagnose_cfg.landscape_examples, cfg.seed + 1, stride=block), diagnose_cfg, device),
        }
        if (Path(cfg.paths.predictor) / LATENT_READOUT_META).exists():  # a readout of an object's position
            readout = load_latent_readout(cfg.paths.predictor, device)
            threshold = float(read_json(Path(cfg.paths.predictor) / LATENT_READOUT_META)["val_median_error"])
            results["object_readout"] = object_readout_error(
                model, readout, rollout_data, cache.field("qpos"), sample_windows(
                    rollout_data, diagnose_cfg.rollout_windows, cfg.seed, stride=block), horizon, threshold, device)
    readout_meta = Path(cfg.paths.predictor) / POSITION_READOUT_META
    if readout_meta.exists() and read_json(readout_meta)["config"]["qpos_indices"] is None:  # the energy's readout
        readout = load_position_readout(cfg.paths.predictor, device)
        reader = NearestFramePositions.from_cache(LatentCache(Path(cfg.paths.latents) / "train"),
                                                  readout.angular.cpu(), cfg.evaluate.energy.goal_neighbours)
        results["goal_positions"] = goal_position_errors(readout, reader.to(device), cache, diagnose_cfg.goal_frames,
                                                         cfg.seed, device)
    atomic_write_json(output_dir / "diagnostics.json", results)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    plot_results(results, output_dir)
    rollout, retrieval_result = results["rollout_error"], results["retrieval"]["mrr"]
    print(f"rollout error at horizon {horizon}: predictor {rollout['model'][-1]:.4f} vs copy-last "
          f"{rollout['copy_last'][-1]:.4f}; retrieval MRR true action {retrieval_result['true_action']:.3f}, "
          f"wrong action {retrieval_result['wrong_action']:.3f}; written to {output_dir}")
    if "goal_positions" in results:
        goal = results["goal_positions"]
        print(f"goal positions, largest error, median: readout {goal['readout']['median']:.4f}, "
              f"{goal['neighbours']} nearest training frames {goal['nearest_frames']['median']:.4f} (task units)")
