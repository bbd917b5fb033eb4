"""The .proto sources compile from the checkout with one include root, ``proto/``.

Their imports name ``hedui/proto/v1/<file>.proto``; that path has to exist under ``proto/`` so
that protoc, grpcurl and @grpc/proto-loader pointed at the checkout resolve it, and it has to stay
the file name the generated ``hedui.proto.v1.*_pb2`` modules register (scripts/gen-proto).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[1]
INCLUDE_ROOT = REPO / "proto"
_NOT_SOURCES = {"build", "node_modules", "__pycache__"}  # build/ holds the editable link tree


def repo_protos() -> list[Path]:
    """Every .proto file of the checkout (hidden folders, such as .venv and .git, left out)."""
    found: list[Path] = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [
            d
            for d in subfolders
            if not d.startswith(".") and d not in _NOT_SOURCES and not d.endswith(".egg-info")
        ]
        found += [Path(folder, f) for f in files if f.endswith(".proto")]
    return sorted(found)


PROTOS = repo_protos()


def test_the_checkout_has_the_protos() -> None:
    names = {
        p.relative_to(INCLUDE_ROOT).as_posix() for p in PROTOS if p.is_relative_to(INCLUDE_ROOT)
    }
    assert {
        "hedui/proto/v1/audit.proto",
        "hedui/proto/v1/common.proto",
        "hedui/proto/v1/connector.proto",
        "hedui/proto/v1/custodian.proto",
        "hedui/proto/v1/verification.proto",
    } <= names


@pytest.mark.parametrize("path", PROTOS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_proto_sits_at_its_import_path(path: Path) -> None:
    """Under proto/hedui/proto/v1/, so that its name under the include root is the name the
    Python code generated from it is imported by (hedui.proto.v1.<file>_pb2)."""
    assert path.parent == INCLUDE_ROOT / "hedui" / "proto" / "v1"


@pytest.fixture(scope="module")
def compiled(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, descriptor_pb2.FileDescriptorSet]:
    """Every .proto of the checkout compiled with -I proto as the only include root.

    ``python -m grpc_tools.protoc`` adds grpc_tools' bundled well-known types (google/protobuf/
    *.proto) as a last include root, as a stand-alone protoc does with its own.
    """
    out = tmp_path_factory.mktemp("protoc")
    descriptors = out / "descriptors.pb"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={INCLUDE_ROOT}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--descriptor_set_out={descriptors}",
            *map(str, PROTOS),
        ],
        cwd=out,  # nothing resolves from the working directory
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return out, descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes())


def test_every_proto_compiles_from_the_checkout(
    compiled: tuple[Path, descriptor_pb2.FileDescriptorSet],
) -> None:
    out, descriptors = compiled
    names = [p.relative_to(INCLUDE_ROOT).as_posix() for p in PROTOS]
    assert sorted(f.name for f in descriptors.file) == sorted(names)
    for name in names:
        stem = name.removesuffix(".proto")
        assert (out / f"{stem}_pb2.py").is_file()
        assert (out / f"{stem}_pb2_grpc.py").is_file()


def test_the_committed_code_was_generated_from_these_sources(
    compiled: tuple[Path, descriptor_pb2.FileDescriptorSet],
) -> None:
    """hedui.proto.v1.<file>_pb2 registers the file under the same name, with the same imports
    and the same definitions, as the checkout's source (comments aside: they are not part of a
    descriptor). Otherwise run scripts/gen-proto."""
    _, descriptors = compiled
    for source in descriptors.file:
        module = importlib.import_module(
            source.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        )
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        expected = descriptor_pb2.FileDescriptorProto()
        expected.CopyFrom(source)
        for message in expected.message_type:
            _drop_json_names(message)
        assert committed == expected, source.name


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    """protoc's Python generator leaves json_name out of the descriptors it embeds."""
    for field in [*message.field, *message.extension]:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)


def _package_folder(package: str, package_dir: dict[str, str]) -> Path:
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in package_dir:
            return REPO.joinpath(package_dir[prefix], *parts[n:])
    return REPO.joinpath(*parts)


def test_every_proto_ships_in_the_package() -> None:
    """package-data installs each .proto at hedui/proto/<import path>, so the installed hedui.proto
    folder is an include root just as proto/ is in the checkout."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    data: dict[str, list[str]] = setuptools.get("package-data", {})
    shipped: dict[Path, tuple[str, str]] = {}  # file: (package, path inside the package)
    for package in setuptools["packages"]:
        folder = _package_folder(package, package_dir)
        for pattern in data.get("*", []) + data.get(package, []):
            for path in folder.glob(pattern):
                shipped[path] = (package, path.relative_to(folder).as_posix())
    for path in PROTOS:
        assert path in shipped, f"{path.relative_to(REPO)} is not in any package-data pattern"
        assert shipped[path] == ("hedui.proto", path.relative_to(INCLUDE_ROOT).as_posix())
