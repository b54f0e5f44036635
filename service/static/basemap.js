// The basemap under GeoTwin's maps (GEOTWIN_API__BASEMAP_STYLE_URL), shared by the viewer and the HTML pages.
// A basemap that cannot be loaded is left out with a warning: the data still draws, on a plain background.
(function () {
  const loaded = new Map();

  async function fetchStyle(url) {
    try {
      const answer = await fetch(url);
      const style = answer.ok ? await answer.json() : null;
      if (style && Array.isArray(style.layers)) return absolute(style, answer.url || url);
    } catch (err) {
      // unreachable or not JSON: the same as no basemap
    }
    console.warn("basemap not loaded: " + url);
    return null;
  }

  // A URL in the style relative to where the style came from; MapLibre would resolve it against our page once
  // the style is merged into ours. Absolute URLs (https:, mapbox:, …) and the {fontstack}/{z} templates stay.
  function resolve(value, base) {
    if (typeof value !== "string" || /^[a-z][a-z0-9+.-]*:/i.test(value)) return value;
    return new URL(value, base).href.replace(/%7B/gi, "{").replace(/%7D/gi, "}");
  }

  function absolute(style, base) {
    const sources = {};
    for (const [id, source] of Object.entries(style.sources || {})) {
      const copy = {...source};
      for (const key of ["url", "data"]) if (key in copy) copy[key] = resolve(copy[key], base);
      if (Array.isArray(copy.tiles)) copy.tiles = copy.tiles.map((t) => resolve(t, base));
      if (Array.isArray(copy.urls)) copy.urls = copy.urls.map((u) => resolve(u, base));
      sources[id] = copy;
    }
    const sprite = Array.isArray(style.sprite)
      ? style.sprite.map((s) => ({...s, url: resolve(s.url, base)})) : resolve(style.sprite, base);
    return {...style, sources, sprite, glyphs: resolve(style.glyphs, base)};
  }

  // The basemap style at `url`, or null (no URL, unreachable, not a style); fetched once per page.
  window.geotwinBasemap = function (url) {
    if (!url) return Promise.resolve(null);
    if (!loaded.has(url)) loaded.set(url, fetchStyle(url));
    return loaded.get(url);
  };

  // `style` (a GeoTwin style) over `basemap`: the basemap's sources, sprite and glyphs join it, its layers come
  // first, and GeoTwin's own background gives way to the basemap's.
  window.geotwinOverBasemap = function (style, basemap) {
    if (!basemap) return style;
    const ours = new Set(style.layers.map((l) => l.id));
    const merged = {...style, sources: {...basemap.sources, ...style.sources},
                    layers: [...basemap.layers.filter((l) => !ours.has(l.id)),
                             ...style.layers.filter((l) => l.type !== "background")]};
    for (const key of ["sprite", "glyphs"]) if (basemap[key]) merged[key] = basemap[key];
    return merged;
  };
})();
