"""A Worker whose fetch always raises: shows how the runner reports unhandled exceptions."""

from workers import WorkerEntrypoint


def _explode(path):
    raise ValueError(f"boom at {path}")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        _explode(request.url)
