"""The AuraSR network, its configuration, and its checkpoints."""

from .checkpoints import (
    CONFIG_FILE,
    REGISTRY,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointFiles,
    CheckpointMismatch,
    CheckpointNotFound,
    CheckpointReader,
    CheckpointUnreadable,
    HubUnreachable,
    check_state_dict,
    load_model,
    random_state_dict,
    resolve_checkpoint,
    save_checkpoint,
    save_random_checkpoint,
)
from .config import RELEASED_CONFIG, SMALL_CONFIG, AuraSRConfig, ConfigError, StyleNetworkConfig
from .network import INPUT_NOISE_SCALE, AuraSR, fold_network

__all__ = [
    "CONFIG_FILE",
    "INPUT_NOISE_SCALE",
    "REGISTRY",
    "RELEASED_CONFIG",
    "SMALL_CONFIG",
    "WEIGHTS_FILE",
    "AuraSR",
    "AuraSRConfig",
    "CheckpointError",
    "CheckpointFiles",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "CheckpointReader",
    "CheckpointUnreadable",
    "ConfigError",
    "HubUnreachable",
    "StyleNetworkConfig",
    "check_state_dict",
    "fold_network",
    "load_model",
    "random_state_dict",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_random_checkpoint",
]
