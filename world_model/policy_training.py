"""`jepa-agent policy`: train the goal-conditioned policy (world_model.goal_policy) on the latent cache.

    jepa-agent policy experiment=quick hydra.run.dir=runs/quick          # after `train`; about a minute
    jepa-agent policy experiment=quick policy.steps=500 hydra.run.dir=runs/quick

Goal-conditioned behaviour cloning with hindsight goals: a sample is frame t of a training episode, the
goal frame t + j (j uniform in 1..`goal_steps`), and the `blocks * block` actions executed from t on as
the target (mean squared error). A `hold_fraction` of the samples instead has frame t as its goal and
`hold_action` (the action that keeps the robot still) as every target: a goal already reached is held.
Inputs are prepared as the agent prepares them: the predictor's
`prepare_latents` and `prepare_proprio`, the position readout's outputs and the latent readout's object
positions when the run has them (`policy.latents`, `policy.object_readout`: null reads what the run has). The
`policy` config section (configs/policy/default.yaml) holds the settings. Writes `paths.policy` (`DIR/policy`):
`goal_policy.safetensors`, `goal_policy.json` (config, identity, held-out loss next to the
predict-the-mean baseline), `config.yaml`. A rerun of the same identity (settings, seed, the predictor's
and readout's weights, the training latents) does nothing; one of another is refused, naming the keys,
unless `run.overwrite=true`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bookkeeping.checks import check_ints, check_numbers, is_number
from bookkeeping.identity import config_identity
from bookkeeping.io import atomic_write_text, ensure_writable_dir, may_resume, read_json, sha256_file
from world_model.fitting import fit_steps
from world_model.goal_policy import META_FILE, WEIGHTS_FILE, GoalPolicy, PolicyConfig, frame_readouts, save_goal_policy
from world_model.latent_cache import LatentCache, load_stage_encoder
from world_model.latent_readout import WEIGHTS_FILE as LATENT_READOUT_FILE, load_latent_readout
from world_model.position_readout import WEIGHTS_FILE as READOUT_FILE, load_position_readout
from world_model.predictor import WEIGHTS_FILE as PREDICTOR_FILE, load_predictor

SETTINGS = ("steps", "batch_size", "lr", "weight_decay", "hidden", "depth", "blocks", "goal_steps", "latents",
            "proprio", "object_readout", "hold_fraction", "hold_action",
            "val_samples")  # the `policy` keys: configs/policy/default.yaml


def policy_settings(cfg: DictConfig) -> dict:
    """The `policy` section, checked: one-line errors naming a bad value; `blocks` and `goal_steps` filled."""
    settings = OmegaConf.to_container(cfg.policy, resolve=True)
    unknown, missing = sorted(set(settings) - set(SETTINGS)), sorted(set(SETTINGS) - set(settings))
    if unknown:
        raise ValueError(f"policy.{unknown[0]} is not a policy setting; expected one of {sorted(SETTINGS)}")
    if missing:
        raise ValueError(f"policy.{missing[0]} is missing; expected every one of {sorted(SETTINGS)}")
    check_ints(settings, "policy", ("blocks",), nullable=True, null_means="planner.horizon")
    check_ints(settings, "policy", ("goal_steps",), nullable=True, null_means="2 x predictor.block")
    settings["blocks"] = int(cfg.planner.horizon) if settings["blocks"] is None else settings["blocks"]
    settings["goal_steps"] = 2 * int(cfg.predictor.block) if settings["goal_steps"] is None else settings["goal_steps"]
    check_ints(settings, "policy", ("steps", "batch_size", "hidden", "depth", "val_samples"))
    check_numbers(settings, "policy", ("lr",), positive=True)
    check_numbers(settings, "policy", ("weight_decay",))
    for key in ("proprio", "latents", "object_readout"):
        if not isinstance(settings[key], bool) and not (key != "proprio" and settings[key] is None):
            raise ValueError(f"policy.{key}={settings[key]!r} is invalid; expected true or false")
    check_hold(settings["hold_fraction"], settings["hold_action"])
    return settings


def check_hold(fraction, action) -> None:
    """`policy.hold_fraction` in [0, 1); `policy.hold_action` null or numbers in [-1, 1], required when the fraction
    is > 0 (its length is checked against the dataset's actions when training starts)."""
    if not is_number(fraction) or not 0 <= fraction < 1:
        raise ValueError(f"policy.hold_fraction={fraction!r} is invalid; expected a number in [0, 1)")
    if action is not None and (not isinstance(action, list) or not action
                               or not all(is_number(value) and -1 <= value <= 1 for value in action)):
        raise ValueError(f"policy.hold_action={action!r} is invalid; expected null or a list of the action's "
                         "values in [-1, 1] (e.g. [0, 0, 0, 0, 0] for the cube)")
    if fraction > 0 and action is None:
        raise ValueError(f"policy.hold_fraction={fraction} needs policy.hold_action, the action that keeps the robot "
                         "still (e.g. [0, 0, 0, 0, 0] for the cube's end-effector deltas); a task without one keeps "
                         "policy.hold_fraction=0")


class HindsightData:
    """A cache split prepared as the agent sees it, and hindsight samples drawn from it. `position_readout` and
    `latent_readout` (either may be None) give the frames' readouts as the agent reads them."""

    def __init__(self, cache: LatentCache, predictor, position_readout, latent_readout, chunk_episodes: int = 64):
        latents, readouts = [], []
        with torch.no_grad():
            for start in range(0, len(cache), chunk_episodes):
                tokens = torch.from_numpy(np.asarray(cache.latents[start : start + chunk_episodes], np.float32))
                prepared = predictor.prepare_latents(tokens)  # (e, T+1, N, D')
                latents.append(prepared.flatten(2))  # (e, T+1, N*D')
                frame_readout = frame_readouts(position_readout, latent_readout, tokens.flatten(0, 1),
                                               prepared.flatten(0, 1))  # (e*(T+1), R + O)
                readouts.append(frame_readout.view(*tokens.shape[:2], -1))  # (e, T+1, R + O)
            self.latents, self.readouts = torch.cat(latents), torch.cat(readouts)
            self.proprio = None  # (E, T+1, P) standardised, for predictors that read it
            if predictor.config.proprio_dim:
                self.proprio = predictor.prepare_proprio(torch.from_numpy(np.array(cache.proprio)))
        self.actions = torch.from_numpy(np.array(cache.actions, dtype=np.float32))  # (E, T, A)
        self.object_dim = 0 if latent_readout is None else len(latent_readout.config.qpos_indices)  # O

    def sample(self, count: int, chunk_steps: int, goal_steps: int, generator: torch.Generator,
               hold_fraction: float = 0.0, hold_action: torch.Tensor | None = None):
        """`count` hindsight samples -> (latents, goal_latents (count, N*D'), proprio (count, P) | None,
        readout, goal_readout (count, R)), target actions (count, chunk_steps, A). A `hold_fraction` of them has
        the current frame as its goal and `hold_action` (A,) as every target action."""
        episodes, length = len(self.actions), self.actions.shape[1]
        if chunk_steps > length:
            raise ValueError(f"a policy chunk of {chunk_steps} task steps (policy.blocks x predictor.block) is longer "
                             f"than the training episodes ({length} steps); lower policy.blocks")
        episode = torch.randint(0, episodes, (count,), generator=generator)
        start = torch.randint(0, length - chunk_steps + 1, (count,), generator=generator)
        ahead = 1 + (torch.rand(count, generator=generator) * goal_steps).long()  # 1..goal_steps
        goal = torch.minimum(start + ahead, torch.full_like(start, length))  # the frame j steps on, in the episode
        hold = torch.zeros(count, dtype=torch.bool)  # (count,): samples whose goal is where they are
        if hold_fraction > 0:  # (no draw without: the same samples as before holding existed)
            hold = torch.rand(count, generator=generator) < hold_fraction
            goal = torch.where(hold, start, goal)
        steps = start[:, None] + torch.arange(chunk_steps)  # (count, chunk_steps)
        inputs = (self.latents[episode, start], self.latents[episode, goal],
                  None if self.proprio is None else self.proprio[episode, start],
                  self.readouts[episode, start], self.readouts[episode, goal])
        targets = self.actions[episode[:, None], steps]  # (count, chunk_steps, A)
        if hold.any():
            targets[hold] = hold_action
        return inputs, targets


def object_readout(predictor_dir: str, wanted: bool | None):
    """The latent readout beside the predictor when `policy.object_readout` asks for it (None: when there is one)."""
    present = (Path(predictor_dir) / LATENT_READOUT_FILE).exists()
    if not (present if wanted is None else wanted):
        return None
    if not present:
        raise ValueError(f"policy.object_readout=true, but {predictor_dir!r} has no latent readout; train one "
                         "(predictor.latent_readout.steps > 0) or set policy.object_readout=false")
    return load_latent_readout(predictor_dir, "cpu")


def policy_identity(cfg: DictConfig, settings: dict, train_cache: LatentCache) -> dict:
    """What the trained policy depends on: its settings, the seed, the predictor's and readouts' weights
    (the agent's inputs are prepared by them) and the training latents."""
    predictor_dir = Path(cfg.paths.predictor)
    readout_path, latent_readout_path = predictor_dir / READOUT_FILE, predictor_dir / LATENT_READOUT_FILE
    return config_identity({"seed": int(cfg.seed), "policy": settings}, ("seed", "policy"),
                           predictor_sha256=sha256_file(predictor_dir / PREDICTOR_FILE),
                           readout_sha256=sha256_file(readout_path) if readout_path.exists() else None,
                           latent_readout_sha256=sha256_file(latent_readout_path)
                           if latent_readout_path.exists() else None,
                           latents=train_cache.manifest)


def main(cfg: DictConfig) -> None:
    """Train the policy of the run in `cfg.paths` (see the module docstring); skip when it is up to date."""
    settings = policy_settings(cfg)
    fingerprint = load_stage_encoder(cfg).fingerprint
    train_cache = LatentCache(Path(cfg.paths.latents) / "train", fingerprint)
    val_cache = LatentCache(Path(cfg.paths.latents) / "val", fingerprint)
    hold_action_tensor(settings, train_cache.action_dim)  # a hold action of the wrong length fails before any work
    predictor, _ = load_predictor(cfg.paths.predictor)
    readout_path = Path(cfg.paths.predictor) / READOUT_FILE
    readout = load_position_readout(cfg.paths.predictor, "cpu", fingerprint) if readout_path.exists() else None
    latent_readout = object_readout(cfg.paths.predictor, settings["object_readout"])
    output_dir = ensure_writable_dir(cfg.paths.policy, "policy directory")
    identity = policy_identity(cfg, settings, train_cache)
    if (output_dir / META_FILE).exists() and (output_dir / WEIGHTS_FILE).exists():
        if may_resume("goal policy", output_dir, read_json(output_dir / META_FILE).get("identity", {}), identity,
                      bool(cfg.run.overwrite), elsewhere="keep both: paths.policy=<another directory>"):
            print(f"goal policy {output_dir / WEIGHTS_FILE} is up to date; nothing to do")
            atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            return
    (output_dir / "config.yaml").unlink(missing_ok=True)  # the policy changes: written again once it is saved
    train_data = HindsightData(train_cache, predictor, readout, latent_readout)
    val_data = HindsightData(val_cache, predictor, readout, latent_readout)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP: 1 thread is faster, and 3x faster than 2 on a shared machine
    try:
        metrics = train_policy(settings, train_data, val_data, predictor.config.block, int(cfg.seed), output_dir,
                               identity)
    finally:
        torch.set_num_threads(threads)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(f"goal policy: {output_dir / WEIGHTS_FILE} (held-out loss {metrics['val_loss']:.4f}, predicting the mean "
          f"action {metrics['val_loss_mean_action']:.4f}) in {metrics['train_seconds']:.0f} s")


def hold_action_tensor(settings: dict, action_dim: int) -> torch.Tensor | None:
    """`policy.hold_action` as an (A,) tensor, its length checked against the dataset's actions (None: unset)."""
    action = settings["hold_action"]
    if action is None:
        return None
    if len(action) != action_dim:
        raise ValueError(f"policy.hold_action={action} has {len(action)} values; expected {action_dim}, one per "
                         "action dimension of the dataset")
    return torch.tensor(action, dtype=torch.float32)


def train_policy(settings: dict, train_data: HindsightData, val_data: HindsightData, block: int, seed: int,
                 output_dir: Path, identity: dict) -> dict:
    """Fit a GoalPolicy by hindsight behaviour cloning; save it with its metrics; return them."""
    import time

    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    blocks, action_dim = settings["blocks"], train_data.actions.shape[-1]
    chunk_steps, goal_steps = blocks * block, settings["goal_steps"]
    object_dim = train_data.object_dim
    readout_dim = train_data.readouts.shape[-1] - object_dim
    latents = settings["latents"] if settings["latents"] is not None else not (readout_dim + object_dim)
    if not (latents or readout_dim or object_dim):
        raise ValueError("policy.latents=false leaves the policy no input: the run has no position readout "
                         "(predictor.readout.steps=0) and reads no latent readout; set policy.latents=true")
    config = PolicyConfig(latent_size=train_data.latents.shape[-1] if latents else 0,
                          proprio_dim=train_data.proprio.shape[-1]
                          if settings["proprio"] and train_data.proprio is not None else 0,
                          readout_dim=readout_dim, object_dim=object_dim, block_dim=block * action_dim,
                          blocks=blocks, hidden=settings["hidden"], depth=settings["depth"])
    policy = GoalPolicy(config)
    hold = {"hold_fraction": settings["hold_fraction"], "hold_action": hold_action_tensor(settings, action_dim)}
    inputs, _ = train_data.sample(20000, chunk_steps, goal_steps, generator, **hold)
    policy.fit_normalisation(policy.features(*inputs))
    val_inputs, val_targets = val_data.sample(settings["val_samples"], chunk_steps, goal_steps,
                                              torch.Generator().manual_seed(seed + 1), **hold)
    val_features, val_targets = policy.features(*val_inputs), val_targets.reshape(len(val_targets), blocks, -1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])

    def batch_loss() -> torch.Tensor:
        inputs, targets = train_data.sample(settings["batch_size"], chunk_steps, goal_steps, generator, **hold)
        chunk = policy(*inputs)  # (batch, blocks, block*A)
        return (chunk - targets.reshape(chunk.shape)).square().mean()

    fit_steps(optimizer, settings["steps"], settings["lr"], batch_loss, "train goal policy")
    policy.eval()
    with torch.no_grad():
        val_chunk = policy.act_on_features(val_features)
        mean_action = train_data.actions.flatten(0, 1).mean(0).repeat(block)  # (block*A,)
        metrics = {"val_loss": float((val_chunk - val_targets).square().mean()),
                   "val_loss_first_block": float((val_chunk[:, 0] - val_targets[:, 0]).square().mean()),
                   "val_loss_mean_action": float((mean_action - val_targets).square().mean()),
                   "steps": settings["steps"], "train_seconds": time.perf_counter() - started}
    save_goal_policy(policy, output_dir, {"identity": identity, "predictor_sha256": identity["predictor_sha256"],
                                          "metrics": metrics})
    return metrics
