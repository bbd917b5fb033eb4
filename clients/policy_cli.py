"""``hedui policy …``: check a parameter file; explain the parameters in force."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hedui.clients.args import date_arg
from hedui.clients.errors import ClientError
from hedui.core.clock import DEPLOYMENT
from hedui.core.policy import params as params_module
from hedui.core.policy.book import PROGRAMS, PolicyBook
from hedui.server.errors import PolicyError

# The parameters each programme reads (for `explain`); dibao's asset rules apply to all.
_ASSET = (
    "dibao_asset_months",
    "dibao_max_residential",
    "dibao_max_vehicles",
    "dibao_max_enterprises",
)
USES = {
    "dibao": ("dibao_standard", *_ASSET),
    "dibian": ("dibao_standard", "dibian_income_percent", *_ASSET),
    "zhichu": ("dibao_standard", "zhichu_expenditure_share_percent", *_ASSET),
    "tekun": (
        "dibao_standard",
        "tekun_support_percent",
        "tekun_working_age_min",
        "tekun_working_age_max",
        *_ASSET,
    ),
}


def cmd_check(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as e:
        raise ClientError(f"cannot read {args.file}: {e.strerror}") from None
    problems = params_module.check(data)
    if problems:
        for p in problems:
            print(f"{args.file}:{p.line}: {p.message}" if p.line else f"{args.file}: {p.message}")
        print(f"{len(problems)} problem(s); the file cannot be used")
        return 1
    parsed = params_module.parse(data, str(args.file))
    book = PolicyBook({**PolicyBook.builtin().regions, parsed.region: parsed}, parsed.region)
    n = sum(len(p.values) for p in parsed.parameters.values())
    print(
        f"{args.file}: OK: region {parsed.region}, {len(parsed.parameters)} parameters, {n} dated values; "
        f"policy version {book.version(parsed.region)}"
    )
    missing = sorted({u for uses in USES.values() for u in uses} - set(parsed.parameters))
    if missing:
        print(f"note: programmes that need {', '.join(missing)} cannot run in this region")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    book = PolicyBook.builtin()
    if args.file:
        parsed = params_module.load_file(args.file)
        book = PolicyBook({**book.regions, parsed.region: parsed}, parsed.region)
    if args.program not in PROGRAMS:
        raise ClientError(f"unknown programme {args.program!r}; known: {', '.join(PROGRAMS)}")
    if args.region not in book.regions:
        raise ClientError(
            f"unknown region {args.region!r}; known regions: {', '.join(sorted(book.regions))}"
        )
    as_of = args.as_of or DEPLOYMENT.today()
    region = book.regions[args.region]
    program = PROGRAMS[args.program]
    parameters: list[dict[str, Any]] = []
    for name in USES[args.program]:
        param = region.parameters.get(name)
        if param is None:
            parameters.append({"name": name, "defined": False})
            continue
        try:
            v = param.at(as_of)
        except PolicyError as e:
            parameters.append({"name": name, "defined": True, "error": str(e)})
            continue
        parameters.append(
            {
                "name": name,
                "defined": True,
                "value": v.value,
                "unit": param.unit,
                "since": v.start.isoformat(),
                "description": param.description,
                "reference": v.reference,
            }
        )
    if args.json:
        doc = {
            "program": program.name,
            "title_zh": program.title_zh,
            "title_en": program.title_en,
            "region": region.name,
            "as_of": as_of.isoformat(),
            "policy_version": book.version(args.region),
            "disclosure": region.disclosure(args.program),
            "parameters": parameters,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    print(
        f"{program.title_zh} {program.name} ({program.title_en}), {region.name}, on {as_of.isoformat()}"
    )
    print(
        f"policy version {book.version(args.region)}; disclosure to intake: {region.disclosure(args.program)}"
    )
    for p in parameters:
        name = p["name"]
        if not p["defined"]:
            print(f"  {name:<34} (not defined in this region)")
        elif "error" in p:
            print(f"  {name:<34} no value: {p['error']}")
        else:
            value = int(p["value"])
            shown = (
                f"{value // 100}.{value % 100:02d} yuan"
                if str(p["unit"]).startswith("fen")
                else f"{value} {p['unit']}"
            )
            print(f"  {name:<34} {shown:<16} since {p['since']}")
            print(f"  {'':<34} {p['description']}")
            print(f"  {'':<34} {p['reference']}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    policy = sub.add_parser("policy", help="programmes and their parameters").add_subparsers(
        dest="policy_command", required=True
    )
    p = policy.add_parser(
        "check", help="validate a parameter file (schema, dates, units, references)"
    )
    p.add_argument("file", type=Path, help="the parameter file (TOML) to check")
    p.set_defaults(func=cmd_check)
    p = policy.add_parser("explain", help="the parameters in force, with their references")
    p.add_argument("--program", required=True, help=f"programme: {', '.join(PROGRAMS)}")
    p.add_argument(
        "--region",
        default="demo",
        help="region whose parameters to show, e.g. demo or shanghai, or the region of --file "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--as-of",
        type=date_arg,
        help="the date YYYY-MM-DD to show the values of (default: today in China Standard Time)",
    )
    p.add_argument(
        "--file",
        type=Path,
        help="a parameter file to use besides the built-in ones (default: only the built-in ones)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the parameters as JSON (default: text)"
    )
    p.set_defaults(func=cmd_explain)
