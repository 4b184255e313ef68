"""SSE lines as the fault tests read them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx


async def sse_lines(r: httpx.Response) -> AsyncIterator[str]:
    """SSE lines split on LF only (httpx's aiter_lines also splits on U+2028 and friends, which
    a random model's text contains)."""
    buf = b""
    async for chunk in r.aiter_bytes():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
