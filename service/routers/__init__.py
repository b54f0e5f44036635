"""Thin HTTP layer: resolve the request into objects (404/400 here), call a query, shape the response."""
