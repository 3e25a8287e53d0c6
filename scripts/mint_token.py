"""`make token`: mint a test access token from the running demo's mock Entra tenant.

`make demo` writes where its tenant listens to .wrangler/demo.json; this asks that tenant
(POST /_mock/token; tools/entragate_mocks/mock_entra.py) for a token shaped like Entra's and
prints it, so you can try the example policies (examples/policies/, and your edits to them: the
demo reloads them) with curl against the demo gateway:

    make token ARGS='--groups 22222222-2222-4222-8222-222222222222'
    curl -H "Authorization: Bearer $(make -s token)" http://127.0.0.1:8787/api/hello

Tokens carry GUIDs, as Entra's do: policies name groups, users, tenants by GUID (or by
aliases that stand for GUIDs), never by display name.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STATE = Path(__file__).resolve().parents[1] / ".wrangler" / "demo.json"
OTHER_TENANT = "0a0b0c0d-1111-4222-8333-444455556666"


def request_body(args) -> dict:
    claims: dict = {}
    if args.groups is not None:
        claims["groups"] = args.groups
    if args.roles is not None:
        claims["roles"] = args.roles
    if args.scope is not None:
        claims["scp"] = args.scope
    body: dict = {"kind": args.kind, "version": args.version}
    omit = []
    if args.overage:
        # Too many groups for the token: Entra leaves them out and points at Graph instead.
        claims["_claim_names"] = {"groups": "src1"}
        claims["_claim_sources"] = {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/me/getMemberObjects"}}
        omit.append("groups")
    if args.audience:
        body["audience"] = args.audience
    if args.other_tenant:
        body["tid"] = OTHER_TENANT
    if args.expired:
        body["now"] = int(time.time()) - 2 * 3600
        body["lifetime"] = 3600
    if omit:
        body["omit"] = omit
    if claims:
        body["claims"] = claims
    return body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("user", "app"), default="user", help="a person (default) or an app-only token")
    parser.add_argument("--version", choices=("1.0", "2.0"), default="2.0", help="token version (default 2.0)")
    parser.add_argument("--groups", nargs="*", metavar="GUID", help="group object ids (replaces the default ones)")
    parser.add_argument("--roles", nargs="*", metavar="ROLE", help="app roles (replaces the defaults)")
    parser.add_argument("--scope", metavar="SCOPES", help='delegated scopes, space-separated (default "access_as_user")')
    parser.add_argument("--overage", action="store_true", help="too many groups: no groups claim, an overage marker")
    parser.add_argument("--audience", help="another aud (default: the demo API's client id or App ID URI)")
    parser.add_argument("--other-tenant", action="store_true", help=f"issued by another tenant ({OTHER_TENANT})")
    parser.add_argument("--expired", action="store_true", help="expired an hour ago")
    parser.add_argument("--claims", action="store_true", help="print the claims too (on stderr)")
    args = parser.parse_args(argv)
    if not STATE.is_file():
        print("no demo is running: start one with `make demo` (in another terminal)", file=sys.stderr)
        return 1
    tenant = json.loads(STATE.read_text())["authority"]
    request = urllib.request.Request(tenant + "/_mock/token", data=json.dumps(request_body(args)).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.loads(response.read())["access_token"]
    except urllib.error.HTTPError as error:
        print(f"the mock tenant refused: {error.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError:
        print(f"the demo's mock tenant at {tenant} does not answer: is `make demo` still running?", file=sys.stderr)
        return 1
    if args.claims:
        import base64

        payload = token.split(".")[1]
        print(json.dumps(json.loads(base64.urlsafe_b64decode(payload + "==")), indent=2), file=sys.stderr)
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
