"""A Worker that runs checks of the edge code inside workerd itself: `POST /<name>` imports
`check_<name>` (a module beside this one), awaits its `run(payload)` with the JSON body and
answers with the JSON it returns. Used by tests/runtime/conftest.py's `edge_checks`."""

import importlib
import json

from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        name = request.url.rsplit("/", 1)[-1]
        module = importlib.import_module(f"check_{name}")
        result = await module.run(json.loads(await request.text()))
        return Response(json.dumps(result), headers={"content-type": "application/json"})
