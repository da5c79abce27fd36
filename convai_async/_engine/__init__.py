"""The request engine: transport, retry policy, limiter and the one call path."""
