"""All settings, read once from the environment (prefix ``TOONFORGE_``) or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store.tasks import Task

DEFAULT_MODELS: dict[Task, str] = {
    Task.CARTOONIZE: "cartoon",
    Task.MATTE: "matte",
    Task.CLASSIFY: "classify",
    Task.GENERATE: "anime-faces",
    Task.AUTOENCODE: "faces-ae",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOONFORGE_", env_file=".env", extra="ignore")

    # Where versions live (docs/ARCHITECTURE.md: model store).
    store_dir: Path = Path("data/store")
    host: str = "127.0.0.1"
    port: int = 8000
    # The model each task serves when a request names none.
    default_models: dict[Task, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS))

    # ---- input limits
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard, checked before decoding
    max_side_limit: int = 2048  # the largest max_side a cartoonize request may ask for

    # ---- onnxruntime
    # Execution providers in order of preference; unavailable ones are skipped.
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    ort_intra_op_threads: int = 2
    ort_inter_op_threads: int = 1
    # Threads that run decode / inference / encode off the event loop.
    worker_threads: int = 4
    # Requests allowed inside the pool at once; more wait for a slot.
    max_concurrency: int = 16

    # ---- dynamic batching (docs/BENCHMARKS.md says why the defaults are what they are)
    batching: bool = False
    batch_max_size: int = 8
    batch_max_delay_ms: float = 2.0

    # ---- hot reload
    reload_poll_s: float = 1.0
    # A version that failed to load is retried after this long (not on every poll).
    reload_retry_s: float = 30.0
    # Non-active versions asked for with ?version= that stay loaded (least recently used).
    extra_versions_cached: int = 2


@lru_cache
def get_settings() -> Settings:
    return Settings()
