// The basemap under GeoTwin's maps (GEOTWIN_API__BASEMAP_STYLE_URL), shared by the viewer and the HTML pages.
// A basemap that cannot be loaded is left out with a warning: the data still draws, on a plain background.
(function () {
  const loaded = new Map();

  async function fetchStyle(url) {
    try {
      const answer = await fetch(url);
      const style = answer.ok ? await answer.json() : null;
      if (style && Array.isArray(style.layers)) return style;
    } catch (err) {
      // unreachable or not JSON: the same as no basemap
    }
    console.warn("basemap not loaded: " + url);
    return null;
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
