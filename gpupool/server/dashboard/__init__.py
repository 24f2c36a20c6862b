"""The web dashboard: HTML pages under /ui in the `gpupool serve` process (docs/service.md).

web.py holds the routes, log-in and security headers; data.py what each page
shows, read through the service layer as the logged-in user (and who may
see what); charts.py the inline SVG charts; templates/ and static/ the
Jinja2 templates and the stylesheet (package data, no build step).
"""
