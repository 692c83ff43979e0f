"""TensorBoard event files (`world_model.event_log`), read back with TensorBoard's own reader: a resumed run
hides what its killed predecessor logged after the checkpoint, a fresh run starts from nothing."""
from __future__ import annotations

from pathlib import Path

from world_model.event_log import EVENTS_DIR, EventLog


def read_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` as TensorBoard shows them (purged steps hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_a_resumed_run_replaces_the_steps_after_its_checkpoint_and_a_fresh_one_starts_empty(tmp_path):
    killed = EventLog(tmp_path, resumed_step=0)
    for step in range(1, 6):  # checkpoint at step 2, killed after logging step 5
        killed.scalars(step, {"train/loss": float(step)})
    killed.close()
    resumed = EventLog(tmp_path, resumed_step=2)
    for step in range(3, 5):
        resumed.scalars(step, {"train/loss": 10.0 * step, "val/loss": 1.0})
    resumed.close()
    assert read_scalars(tmp_path / EVENTS_DIR, "train/loss") == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert read_scalars(tmp_path / EVENTS_DIR, "val/loss") == [(3, 1.0), (4, 1.0)]

    newest = max((tmp_path / EVENTS_DIR).iterdir(), key=lambda path: path.name)
    newest.write_bytes(newest.read_bytes()[:-5])  # a write killed midway: the last record is cut short
    assert read_scalars(tmp_path / EVENTS_DIR, "train/loss")[:3] == [(1, 1.0), (2, 2.0), (3, 30.0)]

    EventLog(tmp_path, resumed_step=0)  # from scratch: the earlier run's curves are gone
    assert not (tmp_path / EVENTS_DIR).exists()
