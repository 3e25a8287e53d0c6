"""Host adapters for the gateway's I/O interfaces (tests, CLI, benchmarks on CPython)."""

import asyncio
import json
import time
import urllib.error
import urllib.request

from urllib.parse import urlencode

from entragate.entra import HttpFailure
from entragate.keys import KeyFetchError

MAX_DOCUMENT_BYTES = 512 * 1024


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is handed back as the answer (an HTTPError), never followed: as at the edge."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


class UrllibHttp:
    def __init__(self):
        self.requests = []

    def _get(self, url: str, timeout: float):
        self.requests.append(url)
        request = urllib.request.Request(url, headers={"accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read(MAX_DOCUMENT_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise KeyFetchError(f"{url} answered HTTP {error.code}") from None
        except (OSError, ValueError) as error:
            raise KeyFetchError(f"{url} fetch failed: {type(error).__name__}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise KeyFetchError(f"{url} document too large")
        try:
            return json.loads(body)
        except ValueError:
            raise KeyFetchError(f"{url} did not return JSON") from None

    async def get_json(self, url: str, timeout: float):
        return await asyncio.to_thread(self._get, url, timeout)

    def _post(self, url: str, content_type: str, data: bytes, headers: dict, timeout: float):
        self.requests.append(url)
        request = urllib.request.Request(url, data=data, method="POST", headers={
            **headers, "content-type": content_type, "accept": "application/json"})
        try:
            with _NO_REDIRECTS.open(request, timeout=timeout) as response:
                status, body, retry_after = response.status, response.read(MAX_DOCUMENT_BYTES + 1), response.headers.get("retry-after")
        except urllib.error.HTTPError as error:
            status, retry_after = error.code, error.headers.get("retry-after")
            try:
                body = error.read(MAX_DOCUMENT_BYTES + 1)
            except OSError as failure:
                raise HttpFailure(f"{url} fetch failed: {type(failure).__name__}") from None
            finally:
                error.close()
        except (OSError, ValueError) as error:
            raise HttpFailure(f"{url} fetch failed: {type(error).__name__}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise HttpFailure(f"{url} answer too large")
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        return status, answer if isinstance(answer, dict) else None, retry_after

    async def post_form(self, url: str, fields: dict, timeout: float):
        status, document, _ = await asyncio.to_thread(
            self._post, url, "application/x-www-form-urlencoded", urlencode(fields).encode(), {}, timeout)
        return status, document

    async def post_json(self, url: str, document: dict, headers: dict, timeout: float):
        """(status, JSON object or None, Retry-After or None), as platform_io.WorkersHttp."""
        return await asyncio.to_thread(self._post, url, "application/json", json.dumps(document).encode(), headers, timeout)


class MemoryStore:
    def __init__(self):
        self.data = {}

    async def get(self, key):
        return self.data.get(key)

    async def put(self, key, value, ttl=None):
        self.data[key] = value


def wall_clock() -> float:
    return time.time()
