// Keeps a table live from server-sent events: each event is a JSON list of
// rows; a row's cells are filled by the data-field of the table's cells.
(function () {
  for (const table of document.querySelectorAll("table[data-live]")) {
    const src = new EventSource(table.dataset.live);
    const status = document.getElementById(table.dataset.status || "");
    src.onopen = () => { if (status) status.textContent = "live"; };
    src.onerror = () => { if (status) status.textContent = "reconnecting…"; };
    src.onmessage = (ev) => {
      for (const row of JSON.parse(ev.data)) {
        const tr = table.querySelector(`tr[data-id="${CSS.escape(row.id)}"]`);
        if (!tr) { location.reload(); return; } // a new kiosk: the server renders it
        for (const td of tr.querySelectorAll("[data-field]")) {
          const v = row[td.dataset.field];
          td.textContent = v === undefined || v === null ? "" : String(v);
          if (td.dataset.field === "state") td.className = v;
        }
      }
    };
  }
})();
