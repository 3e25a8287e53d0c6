"""Work that several requests wait for: one key fetch, one KV read, shared while it runs.

Sharing is a capability of the platform, injected as `share(coroutine) -> Flight`: an object
any number of requests may await for the coroutine's result (or its exception).

Why it is injected: in workerd, a request's code may only run in that request's own context.
A Python future shared between requests wakes its waiters from the context of the request
that finished the work; workerd then refuses their I/O ("Cannot perform I/O on behalf of a
different request") or cancels a waiter as hung — found by running 100 concurrent requests
for one key fetch in workerd (the Node runner never showed it). A JS promise does not have
the problem: workerd runs its continuations in each awaiting request's own context. So the
Worker passes `platform_io.share`, built on a JS promise; the host default here is a plain
asyncio task, which is all CPython needs.
"""

import asyncio


class LocalFlight:
    """An asyncio task several coroutines may await; a waiter that is cancelled (its own
    timeout) leaves the work running for the others."""

    __slots__ = ("_task",)

    def __init__(self, coroutine):
        self._task = asyncio.ensure_future(coroutine)

    def __await__(self):
        return asyncio.shield(self._task).__await__()


def share_locally(coroutine) -> LocalFlight:
    return LocalFlight(coroutine)
