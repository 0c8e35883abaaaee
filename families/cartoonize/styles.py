"""The catalogue of servable styles (API process): every cartoonize model whose active
version says which style it is (``extra["style"]``, written by ``toonforge pull`` for the
released DCT-Net styles, ``toonforge import --style`` or a fine-tune), with the preview
made when that version was published. Read from the store on each call (the store's own
reads are cheap; a newly activated style shows at once)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.errors import InvalidParameter
from model_store.errors import StoreError
from model_store.store import ModelStore


class Style(BaseModel):
    name: str = Field(description="What ?style= takes.")
    model: str = Field(description="The model serving it (?model= picks it too).")
    version: int = Field(description="Its active version.")
    compound: bool = Field(description="Faces are drawn by a head graph (DCT-Net as released).")
    preview: str | None = Field(
        None, description="A small JPEG (data URL) of a shipped portrait through this"
        " version, made when it was published.")
    licence: str = ""
    source: str = Field("", description="Where the weights came from.")


class StyleList(BaseModel):
    styles: list[Style]


def list_styles(store: ModelStore, task: str) -> list[Style]:
    """The styles the store serves now, by name."""
    found: dict[str, Style] = {}
    for summary in store.list_models(task):
        if summary.active is None:
            continue
        try:
            manifest = store.manifest(summary.name, summary.active)
        except StoreError:
            continue  # a version being replaced: the next call sees the new one
        info = manifest.extra.get("style")
        if not isinstance(info, dict) or not isinstance(info.get("name"), str):
            continue
        preview = manifest.extra.get("preview")
        style = Style(name=info["name"], model=manifest.model, version=manifest.version,
                      compound="head" in manifest.graphs,
                      preview=preview if isinstance(preview, str) else None,
                      licence=str(info.get("licence", "")), source=str(info.get("source", "")))
        # two models claiming one name: the first in the store's order serves it
        found.setdefault(style.name, style)
    return sorted(found.values(), key=lambda s: s.name)


def model_of_style(styles: list[Style], name: str) -> str:
    """The model serving style ``name``; a 422 naming the served styles otherwise."""
    for style in styles:
        if style.name == name:
            return style.model
    known = ", ".join(s.name for s in styles) or "none (toonforge pull dctnet-<style>)"
    raise InvalidParameter("style", f"no style {name!r} is served; served: {known}",
                           {"styles": [s.name for s in styles]})
