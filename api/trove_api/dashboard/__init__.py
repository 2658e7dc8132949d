"""The dashboard's presentation: Jinja2 templates, vendored static assets (no build step, no
outside network), and the helpers that render them. Its routes are ``routers/dashboard``."""
