"""Training curves as TensorBoard event files, beside a training stage's own log (`tensorboard --logdir DIR`).

Pretraining writes `DIR/encoder/tensorboard/` (beside `metrics.csv`), predictor training
`DIR/predictor/tensorboard/` (beside `history.json`); nothing is written anywhere else (not into the current
directory). A run that starts afresh deletes the folder first. A resumed run adds an event file whose
`purge_step` is the step after its checkpoint: TensorBoard then hides what the killed run logged after that
checkpoint (those steps are trained and logged again), as `metrics.csv` drops their rows. Events are flushed
before every checkpoint is written, so a kill loses at most what the resumed run logs again. Event files are
appended to, not renamed into place: a killed write leaves a truncated last record, which TensorBoard skips.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

EVENTS_DIR = "tensorboard"


class EventLog:
    """Scalars by tag ("train/loss") and step into `output_dir/tensorboard/`; `resumed_step`: the step of the
    checkpoint the run continues from (0: from scratch, the folder's earlier events deleted)."""

    def __init__(self, output_dir: str | Path, resumed_step: int):
        self.path = Path(output_dir) / EVENTS_DIR
        self.resumed_step = resumed_step
        self.writer = None  # opened at the first scalar: a rerun with nothing to train adds no file
        if resumed_step == 0:
            shutil.rmtree(self.path, ignore_errors=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            purge_step = self.resumed_step + 1 if self.resumed_step else None
            wait_for_a_later_second(self.path)
            self.writer = SummaryWriter(log_dir=str(self.path), purge_step=purge_step)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Before a checkpoint: what was logged up to it goes to disk."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def wait_for_a_later_second(path: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with its second of creation
    (then host, pid and a counter, which sort as text: "10" before "9"). A resumed run's purge applies only to
    files read before its own, so its file must sort last: made within the same second as an earlier one
    (a kill and resume in one process, in tests), it waits for the next second."""
    newest = max((int(name.split(".")[3]) for name in (file.name for file in path.glob("events.out.tfevents.*"))
                  if name.split(".")[3].isdigit()), default=0)
    while int(time.time()) <= newest:
        time.sleep(0.05)
