"""One router per resource; every handler parses, calls the service, returns its view."""
