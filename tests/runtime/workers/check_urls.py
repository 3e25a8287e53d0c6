"""Read each URL with the runtime's own parser (WHATWG `new URL()` in workerd), and give the
verdicts of entragate.authority as the edge's Python computes them: answers
{"parsed": {url: parts or {"error": ...}}, "documents": [[authority, url, fetched or None], ...],
"authorities": {configured: canonical or None}}."""

import js

from entragate.authority import UnsafeUrl, canonical_authority, document_url

PARTS = ("href", "origin", "protocol", "username", "password", "host", "hostname", "port", "pathname", "search", "hash")


def parse(url: str) -> dict:
    try:
        parsed = js.URL.new(url)
    except Exception as error:  # a JS TypeError: not a URL to WHATWG
        return {"error": str(error)}
    return {part: str(getattr(parsed, part)) for part in PARTS}


async def run(payload):
    documents = []
    for authority, url in payload["documents"]:
        try:
            fetched = document_url(url, authority)
        except UnsafeUrl:
            fetched = None
        documents.append([authority, url, fetched])
    authorities = {}
    for configured in payload["authorities"]:
        try:
            authorities[configured] = canonical_authority(configured)
        except ValueError:
            authorities[configured] = None
    urls = {url for _, url, _ in documents} | {fetched for *_, fetched in documents if fetched}
    urls |= {authority for authority in authorities.values() if authority}
    return {"parsed": {url: parse(url) for url in urls}, "documents": documents, "authorities": authorities}
