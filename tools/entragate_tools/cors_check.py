"""`check`: CORS settings (`cors = {…}` on a route) that cannot do what they are there for.

The schema refuses what is never valid (`*` with credentials, a malformed origin, a method the
route does not take); these are warnings about settings that are valid but leave browsers
unable to call the route the way it requires.
"""


def cors_json(cors) -> dict:
    """The compiled form read by entragate/cors.py."""
    return {
        "origins": list(cors.origins),
        "methods": None if cors.methods is None else list(cors.methods),
        "headers": list(cors.headers),
        "expose": list(cors.expose),
        "credentials": cors.credentials,
        "max_age": cors.max_age,
    }


def cors_warnings(routes_json: list, ctxs: list) -> list:
    out = []
    for item, ctx in zip(routes_json, ctxs):
        cors = item.get("cors")
        if not cors or item["public"]:
            continue
        if "authorization" not in cors["headers"] and not item.get("login"):
            out.append(ctx.diagnostic(
                "warning", ("cors", "headers"),
                "the route needs a bearer token, but cors.headers does not name 'authorization': browsers will "
                "not send one across origins ('*' does not cover it)"))
        if item.get("login") and not cors["credentials"]:
            out.append(ctx.diagnostic(
                "warning", ("cors", "credentials"),
                "has login = true, but cors.credentials is false: scripts on other origins cannot send the "
                "sign-in session cookie"))
    return out
