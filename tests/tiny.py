"""Configurations small enough for a test to run a trainer end to end in seconds."""

REINFORCE = ["--image-size", "12", "--patch-size", "4", "--steps", "2", "--samples", "2", "--eval-images", "8"]
REINFORCE += ["--hidden-size", "16"]
LOG_EVERY_2 = [
    "--log-every",
    "2",
    "--image-every",
    "2",
    "--save-every",
    "2",
    "--curve-every",
    "2",
    "--curve-images",
    "8",
]
METRICS_KEYS = ("sse", "psnr", "bits_per_image", "images_per_second", "num_images", "wall_seconds")


def run_flags(tmp_path, name: str) -> list[str]:
    """Logs, checkpoint and metrics of run ``name`` under ``tmp_path``."""
    return [
        "--logdir",
        str(tmp_path / "runs"),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--run-name",
        name,
        "--metrics-json",
        str(tmp_path / f"{name}.json"),
    ]
