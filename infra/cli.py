"""`underlay`: the developer CLI behind the Makefile targets.

underlay dev [--port 3000]                      serve the whole API locally
underlay token [--sub S] [--scope X ...] [--tier T] [--ttl N]
underlay invoke FUNCTION EVENT.json             run one handler on one event and print its answer
underlay openapi                                print the OpenAPI document
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def _on_path() -> None:
    # The handlers are imported as `functions.<name>.app`, exactly as Lambda does from the code asset.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def cmd_dev(args: argparse.Namespace) -> int:
    from infra.local.stack import serve

    return serve(args.port)


def cmd_token(args: argparse.Namespace) -> int:
    from infra.local.issuer import LocalIssuer

    scopes = [s for chunk in (args.scope or ["platform:read"]) for s in chunk.split()]
    extra = {"tenant": args.tenant} if args.tenant else {}
    print(LocalIssuer().mint(sub=args.sub, scopes=scopes, tier=args.tier, ttl_seconds=args.ttl, **extra))
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from underlay import declaration

    try:
        declaration.function(args.function)
    except KeyError:
        names = ", ".join(f.name for f in declaration.FUNCTIONS)
        print(f"underlay invoke: unknown function {args.function!r}; choose one of {names}", file=sys.stderr)
        return 2
    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        print(f"underlay invoke: cannot read {args.event}: {exc}", file=sys.stderr)
        return 2
    from infra.local.stack import LocalStack

    with LocalStack(port=0, serve_http=False, event_sources=[]) as stack:  # no workers: just this one call
        event = _with_token(event, stack)
        result = stack.runner.invoke(args.function, event)
    print(json.dumps(result, indent=2))
    return 0


def _with_token(event: dict, stack: Any) -> dict:
    """Sample events carry `Bearer {{token}}`: put in a real local token, and for HTTP events fill the
    authorizer context by running the real authorizer on it, as API Gateway would."""
    from underlay import auth
    from underlay.auth_settings import AuthSettings

    verifier = auth.TokenVerifier(
        AuthSettings.from_env(), auth.JwksCache(AuthSettings.from_env(), stack.issuer.jwks)
    )
    auth._verifier = verifier  # no HTTP server here to serve the JWKS
    token = stack.issuer.mint(scopes=["platform:admin"])
    event = json.loads(json.dumps(event).replace("{{token}}", token))
    if "type" not in event and (event.get("headers") or {}).get("authorization"):
        decision = auth.authorize({**event, "routeKey": event.get("routeKey", "")})
        event.setdefault("requestContext", {})["authorizer"] = {"lambda": decision["context"]}
    return event


def cmd_openapi(_: argparse.Namespace) -> int:
    from underlay.openapi import document_json

    print(json.dumps(json.loads(document_json()), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    _on_path()
    parser = argparse.ArgumentParser(prog="underlay", description="Underlay developer CLI")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="serve the whole API locally")
    dev.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    dev.set_defaults(run=cmd_dev)

    token = sub.add_parser("token", help="mint a JWT from the local issuer")
    token.add_argument("--sub", default="dev-user")
    token.add_argument("--scope", action="append", help="repeat, or pass a space-separated list")
    token.add_argument("--tier", default=None)
    token.add_argument("--tenant", default=None)
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(run=cmd_token)

    invoke = sub.add_parser("invoke", help="run one handler on one event")
    invoke.add_argument("function")
    invoke.add_argument("event")
    invoke.set_defaults(run=cmd_invoke)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document")
    openapi.set_defaults(run=cmd_openapi)

    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
