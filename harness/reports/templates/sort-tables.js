(function () {
  function key(cell) { var v = cell.getAttribute("data-value"); return v === null ? null : parseFloat(v); }
  function compare(a, b, asc) {
    var x = key(a), y = key(b), d;
    if (x === null && y === null) {
      d = a.textContent.trim().localeCompare(b.textContent.trim(), undefined, {numeric: true});
    } else if (x === null || y === null) { return x === null ? 1 : -1; } else { d = x - y; }
    return asc ? d : -d;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending", body = table.tBodies[0];
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        Array.prototype.slice.call(body.rows)
          .sort(function (r, s) { return compare(r.cells[col], s.cells[col], asc); })
          .forEach(function (r) { body.appendChild(r); });
      }
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });
})();
