"""The corridor: what both processes import (configuration, the pipe
transport, logging set-up, launching a process by module name). Light:
no torch, no aiohttp."""
