"""Google-authenticated origins in the policy (issue #18): the compiled form of a route's
`origin_auth`, and `check`'s warning when a deployment it can see lacks what they need.

A route with `origin_auth = "google"` compiles to `"origin_auth": {"type": "google",
"audience": …}`; the audience is `origin_audience`, else the origin's scheme://host (what Cloud
Run expects: the service URL). The Google variables are not secrets (a provider's resource
name, a service account's e-mail), so they belong in wrangler.toml's [vars]; `check` warns for
each deployment there that lacks one. A value set only with --var or as a secret is not seen:
the warning says so. (The Worker itself refuses to start without them: gateway.assemble.)
"""

from entragate.config import origin_audience_of

REQUIRED_VARIABLES = ("GOOGLE_WORKLOAD_PROVIDER", "GOOGLE_SERVICE_ACCOUNT", "ENTRA_CLIENT_ID")


def origin_auth_json(route) -> dict:
    """The compiled route's `origin_auth` member (none for a route without it)."""
    if route.origin_auth is None:
        return {}
    audience = route.origin_audience or origin_audience_of(route.origin)
    return {"origin_auth": {"type": route.origin_auth, "audience": audience}}


def deployment_warnings(routes_json: list, ctxs: list, deployments) -> list:
    out = []
    for item, ctx in zip(routes_json, ctxs):
        if not item.get("origin_auth"):
            continue
        for deployment in deployments:
            missing = [name for name in REQUIRED_VARIABLES if name not in deployment.variables]
            if missing:
                out.append(ctx.diagnostic(
                    "warning", ("origin_auth",),
                    f"needs a Google ID token for its origin, but {deployment.where} does not set "
                    f"{', '.join(missing)} (unless given as a secret or with --var, the Worker refuses every "
                    "request with gateway_misconfigured)"))
    return out
