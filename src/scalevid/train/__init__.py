"""SCALE pretraining: config, schedule, data on the device, the step loop, checkpoints.

Pipeline order inside: config -> schedule -> data -> checkpoint -> engine (the loop) -> run (the
set-up a `scalevid train` call does)."""

from scalevid.train.config import TrainConfig, load_config
from scalevid.train.run import train

__all__ = ["TrainConfig", "load_config", "train"]
