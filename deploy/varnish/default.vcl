vcl 4.1;
# Tile and data cache in front of GeoTwin (docker compose --profile cache). It follows the service's headers:
# - `public, no-cache` with an ETag (tiles, items, metadata): stored, but revalidated on every request with
#   If-None-Match, so a changed collection is never served stale; an unchanged one costs the service a 304.
# - `private` / `no-store` (anything asked with a key or token, admin answers): never stored.
# - requests with credentials and every write go straight through.
# - pages vary by language: Accept-Language is cut down to the page's language before the lookup.

backend geotwin {
    .host = "app";
    .port = "8000";
    .probe = { .url = "/health"; .interval = 5s; .timeout = 2s; .window = 5; .threshold = 3; }
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    if (req.http.Authorization || req.http.X-API-Key) {
        return (pass);
    }
    if (req.url ~ "^/(health|ready|metrics)") {
        return (pass);
    }
    unset req.http.Cookie;
    # Pages come in German or English (Vary: Accept-Language): one stored copy per language, not one per
    # browser's way of saying it ("de-DE,de;q=0.9,en-US;q=0.8" and "de" alike). The first language named wins.
    if (req.http.Accept-Language ~ "^\s*de") {
        set req.http.Accept-Language = "de";
    } else {
        unset req.http.Accept-Language;
    }
    return (hash);
}

sub vcl_backend_response {
    if (beresp.http.Cache-Control ~ "(private|no-store)") {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    if (beresp.http.ETag && beresp.http.Cache-Control ~ "no-cache") {
        # Expired at once, kept for conditional requests: every hit asks the service "still this ETag?"
        set beresp.ttl = 0s;
        set beresp.grace = 0s;
        set beresp.keep = 1h;
        return (deliver);
    }
}
