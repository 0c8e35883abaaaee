"""``toonforge models``: list, show, activate and roll back models over HTTP."""

from __future__ import annotations

from toonforge_client.cli.base import EXIT_OK, Command, Ctx, arg, dump, out, table
from toonforge_client.types import ActivateResponse


def list_models(ctx: Ctx) -> int:
    models = ctx.client.list_models()
    if ctx.json:
        dump(models)
    else:
        table([[m["name"], m["task"], str(m["active"] or "-"),
                ",".join(map(str, m["versions"])), "yes" if m["is_default"] else ""]
               for m in models], ["NAME", "TASK", "ACTIVE", "VERSIONS", "DEFAULT"])
    return EXIT_OK


def show_model(ctx: Ctx) -> int:
    args = ctx.args
    if args.version is not None:
        dump(ctx.client.get_model_version(args.name, args.version))
        return EXIT_OK
    detail = ctx.client.get_model(args.name)
    if ctx.json:
        dump(detail)
        return EXIT_OK
    out(f"{detail['name']} ({detail['task']}): active {detail['active'] or '-'},"
        f" loaded {detail['loaded_version'] or '-'}")
    table([[str(v["version"]), v["arch"], v["source"], v["parent"] or "",
            "yes" if v["parity_passed"] else "NO", v["created_at"][:19],
            v["description"]] for v in detail["version_summaries"]],
          ["VERSION", "ARCH", "SOURCE", "PARENT", "PARITY", "CREATED", "DESCRIPTION"])
    return EXIT_OK


def _activated(ctx: Ctx, answer: ActivateResponse) -> int:
    if ctx.json:
        dump(answer)
    else:
        out(f"{answer['name']}: active {answer['previous'] or '-'} -> {answer['active']}")
    return EXIT_OK


def activate_model(ctx: Ctx) -> int:
    return _activated(ctx, ctx.client.activate_model_version(ctx.args.name, ctx.args.version))


def rollback_model(ctx: Ctx) -> int:
    return _activated(ctx, ctx.client.rollback_model(ctx.args.name))


COMMAND = Command("models", "list, show, activate, roll back models (over HTTP)", actions=(
    Command("list", "every model", list_models),
    Command("show", "a model, or one version's manifest", show_model, (
        arg("name"),
        arg("version", nargs="?", type=int),
    )),
    Command("activate", "promote or roll back to VERSION", activate_model, (
        arg("name"),
        arg("version", type=int),
    )),
    Command("rollback", "re-activate the version that was active before", rollback_model, (
        arg("name"),
    )),
))
