"""Write docs/DATASETS.md from the task registry, or with --check fail when it has drifted.

Everything on the page is read from the registered task specs (dataset layout, split rule,
hyper-parameter model, gate, starter recipe) and from the defaults of the intake settings,
so the page says what the code does. A layout class this script does not know is described
by its own ``expected`` text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = ROOT / "docs" / "DATASETS.md"

# (setting, what it caps): the intake limits, with their defaults from core.settings.
LIMITS = [
    ("dataset_max_upload_bytes", "bytes of one uploaded archive (413 beyond it)"),
    ("dataset_max_entries", "entries (files and folders) in one archive"),
    ("dataset_max_extracted_bytes", "bytes extracted from one archive"),
    ("dataset_max_compression_ratio", "extracted / compressed bytes of one zip entry or"
                                      " compressed tar stream (a higher ratio is a bomb)"),
    ("dataset_max_files", "files one dataset keeps (files its layout uses)"),
    ("dataset_max_staging_bytes", "bytes on disk of one dataset, counted in 4 KiB blocks"),
    ("max_pixels", "pixels of one image (width x height, read from its header)"),
    ("key_max_dataset_bytes", "bytes on disk of all datasets one API key uploaded (0: none)"),
    ("key_max_dataset_files", "files in all datasets one API key uploaded (0: none)"),
]


def _tree(entries: list[tuple[str, str]]) -> str:
    """A box-drawn tree of ``(path, note)``; a path ending in ``/`` is a folder."""
    root: dict[str, Any] = {}
    notes: dict[tuple[str, ...], str] = {}
    for path, note in entries:
        parts = [p + "/" for p in path.rstrip("/").split("/")[:-1]]
        parts.append(path.rstrip("/").split("/")[-1] + ("/" if path.endswith("/") else ""))
        node = root
        for part in parts:
            node = node.setdefault(part, {})
        notes[tuple(parts)] = note
    lines = ["dataset.zip"]
    width = 32

    def walk(node: dict[str, Any], prefix: str, trail: tuple[str, ...]) -> None:
        for i, (name, child) in enumerate(node.items()):
            last = i == len(node) - 1
            label = prefix + ("└── " if last else "├── ") + name
            note = notes.get((*trail, name), "")
            lines.append(f"{label:<{width}}  {note}".rstrip() if note else label)
            walk(child, prefix + ("    " if last else "│   "), (*trail, name))

    walk(root, "", ())
    return "\n".join(lines)


def _layout_section(layout: Any) -> list[str]:
    from tasks.layouts import ClassFolderLayout, ImageFolderLayout, PairedLayout
    from tasks.split import TEST_FRACTION, VAL_FRACTION

    val_pct, test_pct = round(VAL_FRACTION * 100), round(TEST_FRACTION * 100)
    train_pct = 100 - val_pct
    if isinstance(layout, PairedLayout):
        (a_dir, b_dir), (a, b) = layout.folders, layout.names
        va, vb = (f"val/{d.rsplit('/', 1)[-1]}" for d in layout.folders)
        second = (f"its {b}: same path and name, any image suffix"
                  + (", greyscale, same size" if layout.mask else ""))
        tree = _tree([(f"{a_dir}/0001.jpg", f"the {a}"), (f"{a_dir}/0002.jpg", ""),
                      (f"{b_dir}/0001.png", second), (f"{b_dir}/0002.png", ""),
                      (f"{va}/0101.jpg", "optional: validation pairs, same rule"),
                      (f"{vb}/0101.png", "")])
        what = [
            f"Pairs: `{a_dir}/x.jpg` pairs with `{b_dir}/x.png` (matched on the path under"
            " the folder without its suffix; sub-folders allowed). A file without its"
            " partner is skipped with the reason in the intake report"
            + (f"; a {b} must be greyscale and the size of its {a}." if layout.mask else "."),
            f"At least {layout.min_pairs} usable pairs.",
        ]
        split = (f"`{va}/` + `{vb}/` when given are the validation split; otherwise the"
                 f" pairs are split {train_pct}:{val_pct} (train:val).")
    elif isinstance(layout, ImageFolderLayout):
        folder = layout.folder
        tree = _tree([(f"{folder}/0001.png", "any image Pillow reads"),
                      (f"{folder}/0002.jpg", ""),
                      (f"{folder}/more/0003.webp", "sub-folders are read too")])
        what = [f"Images only, under `{folder}/` (recursively); no labels.",
                f"At least {layout.min_images} usable images."]
        split = (f"always split {train_pct}:{val_pct} (train:val); a `val/` folder is not"
                 " read for this layout.")
    elif isinstance(layout, ClassFolderLayout):
        flat = _tree([("cat/0001.jpg", "the folder name is the label"),
                      ("cat/0002.jpg", ""), ("dog/0003.jpg", "")])
        nested = _tree([("train/cat/0001.jpg", ""), ("train/dog/0002.jpg", ""),
                        ("val/cat/0101.jpg", "optional"),
                        ("val/dog/0102.jpg", ""), ("test/cat/0201.jpg", "optional"),
                        ("test/dog/0202.jpg", "")])
        tree = flat + "\n\nor\n\n" + nested
        what = [
            "One folder per class, at the root or under `train/`; every class needs a"
            " `train/` folder (a `val/x/` without `train/x/` is skipped).",
            f"At least {layout.min_classes} classes with at least"
            f" {layout.min_train_per_class} readable training image each.",
        ]
        split = ("`val/` and `test/` when given are used as they are; otherwise each class"
                 f" is split {train_pct - test_pct}:{val_pct}:{test_pct}"
                 " (train:val:test).")
    elif getattr(layout, "doc", None) is not None:
        # A family's own layout documents itself: (tree entries, rules, split rule).
        entries, what, split = layout.doc
        tree = _tree(list(entries))
        what = [f"Expected: {layout.expected}.", *what]
    else:
        return [f"Expected: {layout.expected}.", ""]
    seeded = (" The split is seeded by a hash of each file's path: the same files give the"
              " same split on every run and host.")
    return ["```text", tree, "```", "", *(f"- {line}" for line in what),
            f"- Split: {split}{seeded}", ""]


def _bounds(prop: dict[str, Any]) -> str:
    out = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                      ("exclusiveMaximum", "<")):
        if key in prop:
            out.append(f"{sign} {prop[key]}")
    if "enum" in prop:
        out.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"]))
    return ", ".join(out)


def _type(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "prefixItems" in prop:
        return "[" + ", ".join(_type(p) for p in prop["prefixItems"]) + "]"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str",
            "null": "null", "array": "list"}.get(prop.get("type", ""), prop.get("type", "?"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _hyperparameter_table(model: Any) -> list[str]:
    schema = model.model_json_schema()
    rows = ["| name | type | default | bounds | what |", "|---|---|---|---|---|"]
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        if name in required:
            default = "required"
        else:
            default = f"`{json.dumps(prop.get('default'))}`"
        bounds = _bounds(prop)
        for alt in prop.get("anyOf", []):
            bounds = bounds or _bounds(alt)
        rows.append(f"| `{name}` | {_type(prop)} | {default} | {_cell(bounds)}"
                    f" | {_cell(prop.get('description', ''))} |")
    return rows


def render() -> str:
    from core.settings import Settings
    from tasks import task_specs

    fields = Settings.model_fields
    out = [
        "# Datasets",
        "",
        "<!-- Generated by scripts/export_datasets_doc.py from the task specs: do not edit;"
        " `make docs` rewrites it and `make test` checks it. -->",
        "",
        "What to upload for each task (`POST /datasets?task=...`, `toonforge datasets"
        " upload`), how it is split, and the hyper-parameters a fine-tune job"
        " (`POST /jobs/finetune`) accepts for it. The upload is checked at once and answers"
        " an intake report: what it found, what it skipped and why, and whether it can"
        " train.",
        "",
        "## Every upload",
        "",
        "- An archive: zip, tar, tar.gz, tar.bz2 or tar.xz (told by its content, not its"
        " name).",
        "- A single top folder around the layout (`faces/images/...`) is stripped.",
        "- Ignored: hidden files and folders (`.DS_Store`, `.git/`), `__MACOSX/`,"
        " `Thumbs.db`, `desktop.ini`. Any other file that is not a readable image is skipped"
        " and named in the report with its reason.",
        "",
        "### Size limits",
        "",
        "| setting | default | caps |",
        "|---|---|---|",
    ]
    for name, what in LIMITS:
        default = fields[name].default
        shown = f"{default:_}" if isinstance(default, int) else str(default)
        out.append(f"| `TOONFORGE_{name.upper()}` | {shown} | {what} |")
    out += ["", "## Tasks", ""]
    for spec in task_specs():
        out.append(f"- [{spec.name}](#{spec.name}): {spec.description}")
    out.append("")
    for spec in task_specs():
        out += [f"## {spec.name}", "", f"{spec.description}. Default model:"
                f" `{spec.default_model}`"
                + (f"; architectures: {', '.join(f'`{a}`' for a in spec.archs)}."
                   if spec.archs else "."), ""]
        out += ["### Layout", "", *_layout_section(spec.layout)]
        model = spec.hyperparameters
        doc = " ".join((model.__doc__ or "").split())
        out += ["### Hyper-parameters", "", *([doc, ""] if doc else []),
                *_hyperparameter_table(model), "",
                "Fields left out take their defaults; an unknown field or a value out of"
                " bounds is refused with a 422 naming it.", ""]
        if spec.gate is not None:
            better = "lower" if spec.gate.direction == "min" else "higher"
            out += [f"Activation gate (`auto_activate`): validation `{spec.gate.metric}`,"
                    f" {better} is better ([JOBS.md](JOBS.md#activation-gate-auto_activate)).",
                    ""]
        else:
            out += ["Activation gate: none; a person activates a version.", ""]
        if spec.starter is not None:
            hp = ", ".join(f"{k}={v}" for k, v in spec.starter.hyperparameters.items())
            out += [f"Starter (first start on an empty store): `{spec.starter.arch}` from"
                    f" scratch on synthetic data, {hp}.", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = render()
    name = TARGET.relative_to(ROOT)
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{name} is out of date: run `make docs`", file=sys.stderr)
            return 1
        print(f"{name} matches the task specs")
        return 0
    TARGET.write_text(text)
    print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
