"""`make sdk SDK_LANGUAGE=nodejs|go|python`: an SDK of the llmemory-db package for another Pulumi language.

    python -m tools.sdk nodejs --out DIR      # also: go, python; --schema FILE writes the schema as well

The schema is the plugin's own (``llmemory_db.package``, the same text ``pulumi package get-schema
plugin/pulumi-resource-llmemory-db`` prints); the code comes from Pulumi's generators at the CLI's version
(toolchain/sdkgen, built by ``toolchain/bootstrap.sh --sdkgen`` into the toolchain cache: instant once built).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("nodejs", "go", "python")


def sdkgen() -> Path:
    """The sdkgen executable (built on first use; its progress goes to stderr)."""
    done = subprocess.run(["bash", str(ROOT / "toolchain" / "bootstrap.sh"), "--sdkgen"], stdout=subprocess.PIPE,
                          text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit("error: could not build sdkgen (see the [toolchain] lines above)")
    return Path(done.stdout.strip().splitlines()[-1])


def schema_text() -> str:
    from llmemory_db.package.server import PackageProvider

    return PackageProvider().schema


def generate(language: str, out: Path, schema_file: Path | None = None) -> Path:
    """Write the SDK for ``language`` into ``out`` (emptied first); returns ``out``."""
    if language not in LANGUAGES:
        raise SystemExit(f"error: unknown language {language!r}: use one of {', '.join(LANGUAGES)}")
    tool = sdkgen()
    with tempfile.TemporaryDirectory() as tmp:
        schema = schema_file or Path(tmp) / "schema.json"
        schema.write_text(schema_text())
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        done = subprocess.run([str(tool), language, str(schema), str(out)], text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"error: sdkgen failed: {done.stderr.strip()}")
    print(f"[sdk] {language} SDK of llmemory-db: {out}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sdk", description=__doc__.split("\n")[0])
    parser.add_argument("language", choices=LANGUAGES)
    parser.add_argument("--out", type=Path, required=True, help="folder for the SDK (replaced)")
    parser.add_argument("--schema", type=Path, help="also write the package schema to this file")
    args = parser.parse_args(argv)
    generate(args.language, args.out.resolve(), args.schema)
    return 0


if __name__ == "__main__":
    sys.exit(main())
