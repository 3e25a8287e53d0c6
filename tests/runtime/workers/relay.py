"""A Worker that only relays: the request, as it came, to ORIGIN_URL + its path, and the origin's
response back as the runtime gives it. Shows what a Worker's fetch does to a protocol (here,
native gRPC's HTTP trailers) with no gateway code in the way."""

import js
from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        incoming = request.js_object
        path = incoming.url.split("/", 3)[3]
        return Response(await js.fetch(f"{self.env.ORIGIN_URL}/{path}", incoming))
