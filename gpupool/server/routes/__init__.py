"""One router per resource; every handler parses, calls the service, returns its view."""

API_PREFIX = "/api/v1"  # on each router itself, so every route knows its full template
