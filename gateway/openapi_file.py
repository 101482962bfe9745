"""The OpenAPI document of the REST gateway, as a file: written beside the
generated code by scripts/gen-protos (osd/v1/openapi.json) and checked for
freshness by scripts/check, so tools can read it without running a daemon.

    python -m gateway.openapi_file            # prints it
    python -m gateway.openapi_file --check F  # exit 1 when F differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.app import default_services
from gateway.openapi import document
from gateway.routes import method_routes


def render() -> str:
    services = default_services()
    routes = [r for s in services for m in s.methods for r in method_routes(m)]
    return json.dumps(document(services, routes), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="FILE", help="compare with FILE instead of printing")
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    try:
        committed = Path(args.check).read_text()
    except OSError as exc:
        print(f"{args.check}: {exc.strerror}", file=sys.stderr)
        return 1
    if committed != text:
        print(
            f"{args.check} is stale: run scripts/gen-protos and commit the result", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
