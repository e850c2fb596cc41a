"""The front-end wing: everything here runs in the HTTP process (aiohttp,
one event loop). Never imports torch, transformers or ``inferserve.model``."""
