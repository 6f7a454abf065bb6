"""Where the project lives: its root (the local MLflow store, outputs, the lock) and its Hydra configs."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"
