"""`check`: routes with `login = true` that no browser session can ever pass (issue #14).

A session carries who signed in (users, tenants, groups, roles) but never a delegated scope
and never an app identity (entragate/signin.py). A login route whose `allow` can only hold with
`scopes` or `kind = "app"` — or whose `deny` always holds for a session — sends every person
through sign-in to a refusal: almost certainly not what its author meant.
"""

MAYBE = None


def for_session(cond):
    """How `cond` (compiled COND) evaluates for any session: True, False, or MAYBE (it depends
    on who signed in)."""
    op = cond[0]
    if op == "true":
        return True
    if op == "scopes":
        return False  # sessions carry no scopes
    if op == "kind":
        return cond[1] == "user"
    if op == "not":
        inner = for_session(cond[1])
        return MAYBE if inner is MAYBE else not inner
    if op in ("any", "all"):
        results = [for_session(part) for part in cond[1]]
        decisive = op == "any"  # any: one True decides; all: one False decides
        if decisive in results:
            return decisive
        return MAYBE if MAYBE in results else not decisive
    return MAYBE  # groups, roles, users, tenants, clients: depends on the person


def session_warnings(routes_json: list, ctxs: list) -> list:
    out = []
    for item, ctx in zip(routes_json, ctxs):
        if not item.get("login"):
            continue
        allow = MAYBE if item["allow"] is None else for_session(item["allow"])
        deny = False if item["deny"] is None else for_session(item["deny"])
        if allow is False or item["allow"] is None:
            out.append(ctx.diagnostic(
                "warning", ("allow",),
                "has login = true, but its allow can only hold for a bearer token (a scope, or kind = \"app\"): "
                "a browser session never carries scopes or an app identity, so everyone who signs in is refused"))
        elif deny is True:
            out.append(ctx.diagnostic(
                "warning", ("deny",),
                "has login = true, but its deny holds for every browser session: everyone who signs in is refused"))
    return out
