"""What importing the Worker loads in workerd: only modules every request needs (issue #6)."""

# Heavy modules the edge has no use for; each was once pulled in by a dependency.
NEVER_AT_IMPORT = {"urllib.request", "http.client", "ssl", "email", "html.entities", "calendar", "hmac",
                   "jwt.jwks_client", "jwt.algorithms"}
STAND_INS = {"calendar", "jwt.jwks_client", "jwt.algorithms"}


def test_worker_import_loads_nothing_heavy_and_the_stand_ins_hold(edge_checks):
    report = edge_checks.edge_imports
    assert report["python"].startswith("3.14.")
    # jwt.jwks_client and jwt.algorithms are stand-ins, calendar a lazy one: no real module loads.
    assert report["calendar_was_lazy"] is True
    assert report["js_objects_held"] == [], "JS objects looked up at import cannot be in workerd's snapshot"
    assert "entry" in report["loaded"] and "entragate.gateway" in report["loaded"]
    assert not (NEVER_AT_IMPORT - STAND_INS) & set(report["loaded"]), report["loaded"]
    # Once used, the real calendar takes over and answers like the stdlib.
    assert report["timegm"] == 1795478400 and report["month_name"] == "March"
    assert report["real_calendar_now"] == "module"
    # PyJWT at the edge knows no algorithm: asked to verify anything itself, it refuses.
    assert report["pyjwt_algorithms"] == []
    assert report["pyjwt_refusals"] == {"HS256": "InvalidAlgorithmError", "none": "InvalidAlgorithmError"}


def test_platform_clock_and_request_headers_agree_with_the_js_apis(edge_checks):
    """`clock` is time.time (no JS round trip) and must read Date.now()'s clock; the request's
    headers are read in one crossing and must equal what Headers.get gives for each name."""
    sent = [("Host", "gw.example"), ("X-Dup", "one"), ("x-dup", "two"), ("Authorization", "Bearer a.b.c"),
            ("X-Entragate-User-Oid", "forged")]
    report = edge_checks.run("platform_adapters", {"headers": sent})
    assert abs(report["clock_minus_date_now"]) < 0.05
    assert report["headers"] == report["get"]
    assert report["headers"] == {
        "host": "gw.example", "x-dup": "one, two", "authorization": "Bearer a.b.c", "x-entragate-user-oid": "forged",
    }
