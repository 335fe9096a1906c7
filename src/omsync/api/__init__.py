"""HTTP API: routes, wire schemas, request authentication and OMS error bodies."""
