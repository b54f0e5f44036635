// A feature's properties as a table for a map popup, shared by the viewer and the HTML pages' maps. `fields` is
// a layer type's display fields (LayerType.display_fields): the properties come in its order, under their
// titles (the name stays in the tooltip), codes with their labels: "Zoning  Industriegebiet (GI)". Values are
// data, never markup: the table is built from text nodes. Titles, code labels, yes and no come in the page's
// language (window.geotwinWords, which base.html sets from the translations).
// A date property shows as the tables write it: 30.09.2026 on a German page, Sep 30, 2026 on an English one;
// anything that is not a real day (written around the contract) shows as it is.
function isDay(value) {
  if (typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(value)) return false;
  const day = new Date(`${value}T00:00:00Z`);
  return !Number.isNaN(day.getTime()) && day.toISOString().startsWith(value);
}

function geotwinPropertyTable(properties, fields, caption) {
  const known = fields || {};
  const words = window.geotwinWords || {};
  const say = (text) => words[text] || text;
  const lang = document.documentElement.lang || undefined;
  const table = document.createElement("table");
  if (caption) table.createCaption().textContent = caption;
  const names = [...new Set(["id", "municipality", ...Object.keys(known), ...Object.keys(properties)])];
  for (const name of names.filter((n) => n in properties)) {
    const field = known[name] || {};
    const value = properties[name];
    const row = table.insertRow();
    const th = document.createElement("th");
    th.textContent = say(field.title || name);
    th.title = name;  // as filters and the API name it
    row.appendChild(th);
    const label = (field.labels || {})[value];
    row.insertCell().textContent = label ? `${say(label)} (${value})`
      : typeof value === "boolean" ? say(value ? "yes" : "no")
      : field.format === "date" && isDay(value)
        ? new Date(`${value}T00:00:00Z`).toLocaleDateString(lang, {dateStyle: "medium", timeZone: "UTC"})
      // 38,5 on a German page: the page's language, every digit, no grouping (codes and years stay 1998)
      : typeof value === "number" ? value.toLocaleString(lang, {useGrouping: false, maximumFractionDigits: 20})
      : value;
  }
  return table;
}
