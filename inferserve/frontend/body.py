"""A model request's body: read within the size limit, then parsed by the
route's parser (on a thread when large, so a big JSON document cannot stall
every other client on the event loop)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..common.config import ServerConfig
from ..ipc import Call
from .errors import RequestError
from .fields import Parser

# Bodies above this are parsed on a thread.
_INLINE_PARSE_BYTES = 64 * 1024


async def read_call(request: web.Request, config: ServerConfig, parse: Parser, schema: str) -> Call:
    """The request's body, within --max-body-bytes (413), parsed by the
    route's ``parse`` with its request ``schema`` into a Call."""
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        raise _too_large(config)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked body over the limit
        raise _too_large(config) from exc
    if len(body) > config.max_body_bytes:  # aiohttp lets a chunked body of limit + 1 through
        raise _too_large(config)
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse(body, request.content_type, config, schema)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, parse, body, request.content_type, config, schema)


def _too_large(config: ServerConfig) -> RequestError:
    return RequestError(413, "payload_too_large", f"the body exceeds {config.max_body_bytes} bytes")
