"""The only place that builds SQL. Values are always bound; identifiers never come from requests."""
