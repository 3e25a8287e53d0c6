"""A Worker that tells which Python the runtime gives it (/version) and raises on any other
path: shows what the runtime does with an exception the Worker does not handle."""

import sys

from workers import Response, WorkerEntrypoint


def _explode(path):
    raise ValueError(f"boom at {path}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.url.endswith("/version"):
            return Response(sys.version.split()[0])
        _explode(request.url)
