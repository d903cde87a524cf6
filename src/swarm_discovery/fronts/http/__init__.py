"""The HTTP face: the native /v1 API, blocking queries and the SSE change stream."""
