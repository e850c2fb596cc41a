"""Peer servers the peers scenario runs beside inferserve (their own processes)."""
