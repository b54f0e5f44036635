// A feature's properties as a table for a map popup, shared by the viewer and the HTML pages' maps. `fields` is
// a layer type's display fields (LayerType.display_fields): the properties come in its order, under their
// titles (the name stays in the tooltip), codes with their labels: "Zoning  Industriegebiet (GI)". Values are
// data, never markup: the table is built from text nodes. Titles, code labels, yes and no come in the page's
// language (window.geotwinWords, which base.html sets from the translations).
function geotwinPropertyTable(properties, fields, caption) {
  const known = fields || {};
  const words = window.geotwinWords || {};
  const say = (text) => words[text] || text;
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
      // 38,5 on a German page: the page's language, every digit, no grouping (codes and years stay 1998)
      : typeof value === "number" ? value.toLocaleString(document.documentElement.lang || undefined,
                                                         {useGrouping: false, maximumFractionDigits: 20})
      : value;
  }
  return table;
}
